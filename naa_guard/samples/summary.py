"""What the validity checks keep of a sample set: one digest per sample and the shift features of a
capped few, built chunk by chunk so the checks never hold a whole set's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from naa_guard.samples.digests import sample_digests
from naa_guard.samples.sampleset import SampleSet

if TYPE_CHECKING:
    pass


SHIFT_GRID = 8  # images are block-averaged to at most 8 x 8 per channel


SHIFT_PIXELS = 256  # pixels per channel read for the intensity statistics


SHIFT_CROP = 32  # side of the centre crop whose edge energy is measured


SUMMARY_CHUNK = 256  # images decoded at a time by the checks


@dataclass(frozen=True)
class SetSummary:
    """What the checks keep of a sample set: one digest per sample, shift features of a capped few.

    Built chunk by chunk (:func:`summarize`), so the checks never hold a whole set's images.
    """

    names: tuple[str, ...]
    source: Path
    digests: tuple[str, ...]
    features: np.ndarray | None  # image_features rows of the samples the shift check uses

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.digests)


def summarize_chunk(images: np.ndarray, feature_rows: np.ndarray | None) -> tuple[list[str], np.ndarray | None]:
    """Return the digests of a decoded chunk and the shift features of its rows ``feature_rows``."""
    features = image_features(images[feature_rows]) if feature_rows is not None and len(feature_rows) else None
    return sample_digests(images), features


def chunk_feature_rows(feature_positions: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    """Return the sorted feature positions that fall in start..stop-1, relative to start."""
    if feature_positions is None:
        return None
    return feature_positions[(feature_positions >= start) & (feature_positions < stop)] - start


def merge_summary(samples: SampleSet, parts: list[tuple[list[str], np.ndarray | None]]) -> SetSummary:
    """Return a set's summary from its chunks' (digests, features), in chunk order."""
    features = [part[1] for part in parts if part[1] is not None]
    return SetSummary(samples.names, samples.source, tuple(d for part in parts for d in part[0]), np.concatenate(features) if features else None)


def summarize(samples: SampleSet, feature_positions: np.ndarray | None = None, chunk_size: int = SUMMARY_CHUNK) -> SetSummary:
    """Return the set's summary, decoding ``chunk_size`` images at a time."""
    parts = []
    for start in range(0, len(samples), chunk_size):
        stop = min(start + chunk_size, len(samples))
        parts.append(summarize_chunk(samples.decode(start, stop), chunk_feature_rows(feature_positions, start, stop)))
    return merge_summary(samples, parts)


def summary(samples: SampleSet | SetSummary, feature_positions: np.ndarray | None = None) -> SetSummary:
    return samples if isinstance(samples, SetSummary) else summarize(samples, feature_positions)


def _block_means(images: np.ndarray, grid: int) -> np.ndarray:
    """Return (N, C, g, g) float64 block averages of (N, C, H, W) images, g = min(grid, H, W)."""
    _, _, height, width = images.shape
    rows = np.linspace(0, height, min(grid, height) + 1).astype(int)[:-1]
    cols = np.linspace(0, width, min(grid, width) + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(images, rows, axis=2, dtype=np.float64), cols, axis=3)
    counts = np.outer(np.diff([*rows, height]), np.diff([*cols, width]))
    return sums / counts


def image_features(images: np.ndarray) -> np.ndarray:
    """Return (N, F) float64 features: block-averaged pixels plus intensity and edge statistics.

    The statistics read at most ``SHIFT_PIXELS`` evenly spaced pixels per channel and the edges
    of a centre crop of at most ``SHIFT_CROP`` pixels, so big images cost little more than small ones.
    """
    n, channels, height, width = images.shape
    pixels = images.reshape(n, channels, -1)[:, :, :: max(1, height * width // SHIFT_PIXELS)].astype(np.float64)
    top, left = max(0, (height - SHIFT_CROP) // 2), max(0, (width - SHIFT_CROP) // 2)
    crop = images[:, :, top : top + SHIFT_CROP, left : left + SHIFT_CROP].astype(np.float64)
    stats = [
        pixels.mean(axis=2), pixels.std(axis=2), pixels.min(axis=2), pixels.max(axis=2),
        *np.percentile(pixels, [5, 50, 95], axis=2),
        (pixels <= -0.98).mean(axis=2), (pixels >= 0.98).mean(axis=2),  # share of saturated pixels
        np.abs(np.diff(crop, axis=2)).mean(axis=(2, 3)), np.abs(np.diff(crop, axis=3)).mean(axis=(2, 3)),  # edge energy
    ]  # fmt: skip
    return np.concatenate([_block_means(images, SHIFT_GRID).reshape(n, -1), *stats], axis=1)
