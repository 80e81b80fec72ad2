"""Decode one image (a file, or a row of an array file) into the model's channels and size.

Every source goes through the same preprocessing, so identical pixels give identical float32
bytes: the member / non-member overlap check relies on it. An image of another size is an error
unless ``data.fit`` says how to prepare it (:mod:`naa_guard.samples.fit`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from naa_guard.errors import DataError
from naa_guard.samples.fit import fit_array, fit_image
from naa_guard.samples.sampleset import Notes
from naa_guard.userfiles import open_regular

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R 601, as PIL's "L"


def decode_image(file: Path, size: int, channels: int, role: str, notes: Notes) -> np.ndarray:
    """Return the image in `file` as uint8 (channels, size, size)."""
    fix = "Fix: list image files only (a pipe or device is never read)."
    try:
        with open_regular(file, DataError, f"Image of the {role} set", fix) as handle, Image.open(handle) as img:
            img.load()
            mode = img.mode
            if mode.startswith(("I", "F")):
                raise DataError(
                    f"Image {file} in the {role} set has the high-bit-depth mode '{mode}'; "
                    "expected 8 bits per channel (L, RGB, RGBA, P, ...). Fix: save it as an "
                    "8-bit image; naa-guard does not guess how to scale it down."
                )
            return prepare(img, size, channels, notes, f"Image {file} in the {role} set", str(file))
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
        raise DataError(
            f"Cannot decode image {file} in the {role} set ({type(exc).__name__}: {exc}). "
            "Fix: re-export or remove the file; it is corrupt, truncated or not an image "
            "despite its suffix."
        ) from exc


def prepare(img: Image.Image, size: int, channels: int, notes: Notes, where: str, name: str) -> np.ndarray:
    """Return `img` converted to the channel mode and fitted to size x size, as uint8 (C, H, W)."""
    if img.mode == "P" and "transparency" not in img.info:
        img = img.convert("RGB")  # a palette without transparency has no alpha to drop
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")  # via RGBA: palette transparency is dropped like any alpha, and noted
    if "A" in img.mode:
        notes.alpha[name] = None
    color = img.mode not in ("1", "L", "LA")
    if color != (channels == 3):
        how = "color to grayscale" if color else "grayscale to RGB"
        notes.converted.setdefault(how, set()).add(name)
    img = img.convert("L" if channels == 1 else "RGB")  # alpha is dropped, not composited
    if img.size != (size, size):
        img = fit_image(img, size, notes.fit, where)
        notes.fitted.add(name)
    pixels = np.asarray(img, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def decode_bytes(data: bytes, size: int, channels: int, notes: Notes, where: str, name: str, fix: str) -> np.ndarray:
    """Return encoded image bytes (a dataset row, a shard member) decoded and prepared like an image file.

    ``fix`` ends the message when the bytes are no image: how to repair that sample at its source.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode.startswith(("I", "F")):
                raise DataError(f"{where} has the high-bit-depth mode '{img.mode}'; expected 8 bits per channel. Fix: store 8-bit images.")
            return prepare(img, size, channels, notes, where, name)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for bad bytes
        raise DataError(f"Cannot decode the image of {where} ({type(exc).__name__}: {exc}). Fix: {fix}.") from exc


def stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """Return uint8 (C, H, W) images stacked and scaled to float32 (N, C, H, W) in [-1, 1]."""
    batch = np.stack(images).astype(np.float32)
    return batch / np.float32(127.5) - np.float32(1.0)


def uint8_to_pil(sample: np.ndarray) -> Image.Image:
    """Return a uint8 H,W or H,W,C sample as a PIL image (L, RGB or RGBA)."""
    if sample.ndim == 3 and sample.shape[2] == 1:
        sample = sample[:, :, 0]
    # Through PIL like image files, so a png folder and its .npy dump give identical bytes.
    return Image.fromarray(np.ascontiguousarray(sample))


def prepare_float(sample: np.ndarray, size: int, channels: int, notes: Notes, where: str, name: str) -> np.ndarray:
    """Return a float C,H,W sample in [0, 1] as float32 (channels, size, size) in [-1, 1]."""
    if sample.shape[0] == 4:
        notes.alpha[name] = None
    data = _convert_channels(sample.astype(np.float64), channels)
    if data.shape[1:] != (size, size):
        data = fit_array(data, size, notes.fit, where)
        notes.fitted.add(name)
    return (2.0 * data - 1.0).astype(np.float32)


def _convert_channels(data: np.ndarray, channels: int) -> np.ndarray:
    """Return C,H,W `data` with `channels` channels: alpha dropped, luma for 1, repeat for 3."""
    if data.shape[0] == 4:
        data = data[:3]
    if channels == 1 and data.shape[0] == 3:
        return np.tensordot(_LUMA, data, axes=1)[None]
    if channels == 3 and data.shape[0] == 1:
        return np.repeat(data, 3, axis=0)
    return data
