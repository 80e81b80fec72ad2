"""A listed sample set (members, non-members or a control set): where each sample comes from;
images are decoded on demand, a chunk at a time, so an audit's memory does not grow with the set.

A set's ``notes`` say what preprocessing did beyond conversion (fitted sizes, dropped alpha,
skipped files), for the audit's report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class _Reader(Protocol):
    """Decodes the samples of one source at given rows (file list positions or array indices)."""

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Return the samples at ``rows`` as float32 (n, C, H, W) in [-1, 1]."""

    def origin(self, row: int) -> str:
        """Return where the sample at ``row`` comes from: its file path or array index."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing ndarray fields with == is ambiguous
class SampleSet:
    """A listed sample set: where each sample comes from; images are decoded on demand."""

    reader: _Reader
    rows: np.ndarray  # int64, each sample's row in the reader
    names: tuple[str, ...]
    indices: np.ndarray  # int64, index in the full source before `limit`
    captions: tuple[str | None, ...]
    source: Path
    files: tuple[Path, ...]
    log: Notes | None = None  # what preprocessing did beyond conversion, filled as images are decoded

    @property
    def notes(self) -> tuple[str, ...]:
        """Return what preprocessing did beyond conversion so far: fitted sizes, dropped alpha, skipped files."""
        return self.log.lines(len(self)) if self.log is not None else ()

    @classmethod
    def from_images(cls, images: np.ndarray, names: tuple[str, ...], indices: np.ndarray, captions: tuple[str | None, ...], source: Path, files: tuple[Path, ...]) -> SampleSet:
        """Return a set over images already in memory (float32 (N, C, H, W) in [-1, 1])."""
        return cls(_InMemory(np.asarray(images, dtype=np.float32), source), np.arange(len(images), dtype=np.int64), names, np.asarray(indices, dtype=np.int64), captions, source, files)

    def __len__(self) -> int:
        """Return the number of samples."""
        return int(self.rows.shape[0])

    def decode(self, start: int, stop: int) -> np.ndarray:
        """Return the samples at positions start..stop-1, decoded to float32 (n, C, H, W) in [-1, 1]."""
        return self.reader.read(self.rows[start:stop])

    @property
    def images(self) -> np.ndarray:
        """Return every sample decoded at once (memory grows with the set: for small sets)."""
        return self.decode(0, len(self))

    def subset(self, positions: np.ndarray) -> SampleSet:
        """Return the samples at these positions (source indices, names and files kept)."""
        return dataclasses.replace(
            self,
            rows=self.rows[positions],
            names=tuple(self.names[i] for i in positions),
            indices=self.indices[positions],
            captions=tuple(self.captions[i] for i in positions),
        )

    def origin(self, position: int) -> str:
        """Return where the sample at ``position`` comes from: its file path or array index."""
        return self.reader.origin(int(self.rows[position]))

    def materialize(self) -> SampleSet:
        """Return the same set with every image decoded into memory."""
        return dataclasses.replace(self, reader=_InMemory(self.images, self.source, tuple(map(self.origin, range(len(self))))), rows=np.arange(len(self), dtype=np.int64))


class _InMemory:
    """Samples already decoded."""

    def __init__(self, images: np.ndarray, source: Path, origins: tuple[str, ...] | None = None) -> None:
        self.images, self.source, self.origins = images, source, origins

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.images[rows]

    def origin(self, row: int) -> str:
        return self.origins[row] if self.origins is not None else f"{self.source}[{row}]"


class Notes:
    """Counts what preprocessing did to a set, for the audit's report."""

    def __init__(self, role: str, size: int, fit: str | None) -> None:
        self.role, self.size, self.fit = role, size, fit
        # Keyed by sample name: a streamed set decodes an image once per pass (checks, each attack).
        self.fitted: set[str] = set()
        self.converted: dict[str, set[str]] = {}  # "color to grayscale" / "grayscale to RGB" -> sample names
        self.alpha: dict[str, None] = {}  # ordered set of sample names
        self.skipped: list[str] = []

    def of(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Return what was noted of these samples, JSON-ready (to carry it from another process or a store)."""
        wanted = set(names)
        converted = {how: sorted(wanted & got) for how, got in self.converted.items() if wanted & got}
        return {"fitted": sorted(wanted & self.fitted), "converted": converted, "alpha": [name for name in names if name in self.alpha]}

    def add(self, noted: dict[str, Any]) -> None:
        """Add what :meth:`of` returned (here or elsewhere) to these notes."""
        self.fitted.update(noted.get("fitted", ()))
        for how, names in noted.get("converted", {}).items():
            self.converted.setdefault(how, set()).update(names)
        for name in noted.get("alpha", ()):
            self.alpha[name] = None

    def lines(self, total: int) -> tuple[str, ...]:
        found = []
        if self.fitted:
            found.append(f"{len(self.fitted)} of {total} {self.role} image(s) were fitted to the model's {self.size}x{self.size} input with data.fit: {self.fit}")
        for how, names in self.converted.items():
            found.append(f"{len(names)} of {total} {self.role} image(s) were converted from {how} to fit the model's input channels")
        if self.alpha:
            found.append(f"{len(self.alpha)} {self.role} image(s) had an alpha channel, which was dropped (not composited), e.g. {', '.join(list(self.alpha)[:3])}")
        if self.skipped:
            found.append(f"{len(self.skipped)} non-regular file(s) in the {self.role} folder were skipped (pipes, sockets, devices, broken links), e.g. {', '.join(self.skipped[:3])}")
        return tuple(found)


def choose(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Return the sorted int64 source indices kept: all of them, or a seeded subset of `limit`."""
    if limit is None or limit >= count:
        return np.arange(count, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(count, size=limit, replace=False)
    return np.sort(chosen).astype(np.int64)  # sorted: keep the source's order
