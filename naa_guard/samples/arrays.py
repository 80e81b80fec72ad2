"""Array files: a ``.npy`` (memory-mapped) or ``.npz`` of uint8 or float images, read without
unpickling; no message ever suggests enabling it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from naa_guard.errors import DataError
from naa_guard.samples.decode import prepare, prepare_float, stack, uint8_to_pil
from naa_guard.samples.sampleset import Notes, SampleSet, choose

ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")


_FLOAT_SIZES = (2, 4, 8)  # float16/32/64 bytes; checked by kind so big-endian files pass


_ARRAY_CHANNELS = (1, 3, 4)


class _ArrayFile:
    """A .npy (memory-mapped) or .npz array, opened on first read in each process (not pickled)."""

    def __init__(self, file: Path, size: int, channels: int, role: str, notes: Notes, array: np.ndarray | None = None) -> None:
        self.file, self.size, self.channels, self.role, self.notes = file, size, channels, role, notes
        self._array = array

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_array": None}  # a worker process reopens the file itself

    def read(self, rows: np.ndarray) -> np.ndarray:
        if self._array is None:
            self._array = _read_array(self.file, self.role)
            _check_layout(self._array, self.file, self.role)
        return _decode_array_rows(self._array, rows, self.file, self.size, self.channels, self.role, self.notes)

    def origin(self, row: int) -> str:
        return f"{self.file}[{row}]"


def list_array_file(file: Path, size: int, channels: int, limit: int | None, seed: int, role: str, notes: Notes) -> SampleSet:
    """Return the sample set stored in a .npy or .npz file, its layout checked, not yet decoded."""
    array = _read_array(file, role)
    _check_layout(array, file, role)
    indices = choose(array.shape[0], limit, seed)
    return SampleSet(
        reader=_ArrayFile(file, size, channels, role, notes, array),
        rows=indices,
        names=tuple(f"{file.name}[{i}]" for i in indices),
        indices=indices,
        captions=(None,) * len(indices),
        source=file,
        files=(file,),
        log=notes,
    )


_MAGIC = {".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04", b"PK\x05\x06")}


def _check_magic(file: Path, role: str) -> None:
    """Return None; raise DataError if the file does not start like a .npy / .npz file.

    numpy would otherwise try to read it as a pickle and advise allow_pickle=True, which runs
    whatever code the file holds; naa-guard never unpickles and never suggests it.
    """
    try:
        with file.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise DataError(f"Cannot read the array file {file} for the {role} set ({exc.strerror or exc}). Fix: check that it is readable.") from exc
    suffix = file.suffix.lower()
    if not head.startswith(_MAGIC[suffix]):
        kind = "a PNG image" if head.startswith(b"\x89PNG") else "a JPEG image" if head.startswith(b"\xff\xd8") else "not a numpy file"
        raise DataError(
            f"The {role} source {file} ends in {suffix} but is {kind} (it does not start with the {suffix} signature). "
            "Fix: save the images with np.savez(path, images=x) / np.save, or put image files in a folder."
        )


def _decode_array_rows(array: np.ndarray, rows: np.ndarray, file: Path, size: int, channels: int, role: str, notes: Notes) -> np.ndarray:
    """Return the array's samples at ``rows``, preprocessed to float32 (n, channels, size, size)."""
    try:
        chosen = np.asarray(array[rows])  # memory-mapped .npy: reads only these samples
    except (OSError, ValueError) as exc:
        raise DataError(
            f"Cannot read the samples of {file} for the {role} set ({exc}). "
            "Fix: the file is probably truncated; write it again with np.save / np.savez."
        ) from exc
    if not len(chosen):
        return np.empty((0, channels, size, size), dtype=np.float32)
    names = [f"{file.name}[{row}]" for row in rows]
    if chosen.dtype == np.uint8:
        return stack([prepare(uint8_to_pil(sample), size, channels, notes, f"Sample {name} of the {role} set", name) for sample, name in zip(chosen, names, strict=True)])
    _check_float_values(chosen, file, role)
    return np.stack([prepare_float(sample, size, channels, notes, f"Sample {name} of the {role} set", name) for sample, name in zip(chosen, names, strict=True)])


def _read_array(file: Path, role: str) -> np.ndarray:
    """Return the array in a .npy file (memory-mapped) or the image array of a .npz file."""
    _check_magic(file, role)
    try:
        if file.suffix.lower() == ".npy":
            return np.load(file, mmap_mode="r", allow_pickle=False)
        with np.load(file, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "images" in keys:
                return archive["images"]
            if len(keys) == 1:
                return archive[keys[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # numpy's own text for object arrays advises allow_pickle=True: never repeat that advice.
        detail = "it holds Python objects, which naa-guard never unpickles" if "pickle" in str(exc) else str(exc)
        raise DataError(
            f"Cannot read the array file {file} for the {role} set ({detail}). Fix: write it "
            "with np.save / np.savez from a numeric (uint8 or float) array."
        ) from None
    raise DataError(
        f"The .npz file {file} for the {role} set holds {len(keys)} arrays "
        f"({', '.join(keys) or 'none'}) and none is named 'images'. "
        "Fix: save the images under the key 'images' (np.savez(path, images=x)) or keep a "
        "single array in the file."
    )


def _check_layout(array: np.ndarray, file: Path, role: str) -> None:
    """Return None; raise DataError if dtype, rank, channels or sample count are wrong."""
    where = f"The array in {file} ({role} set) has shape {array.shape} and dtype {array.dtype}"
    if array.dtype == np.uint8:
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in _ARRAY_CHANNELS):
            raise DataError(
                f"{where}; uint8 arrays must be N,H,W or channels-last N,H,W,C with C in 1, 3, 4. "
                "Fix: for a channels-first uint8 array use a.transpose(0, 2, 3, 1)."
            )
    elif array.dtype.kind == "f" and array.dtype.itemsize in _FLOAT_SIZES:
        if array.ndim != 4 or array.shape[1] not in _ARRAY_CHANNELS:
            raise DataError(
                f"{where}; float arrays must be channels-first N,C,H,W with C in 1, 3, 4 and "
                "values in [0, 1]. Fix: for a channels-last array use a.transpose(0, 3, 1, 2); "
                "for a single-channel N,H,W array use a[:, None]."
            )
    else:
        raise DataError(
            f"{where}; expected uint8 (0..255, N,H,W or N,H,W,C) or float16/32/64 "
            "(values in [0, 1], N,C,H,W). Fix: convert it, e.g. a.astype(np.uint8) for "
            "0..255 integers or (a / a.max()).astype(np.float32) for other ranges."
        )
    if array.shape[0] == 0 or 0 in array.shape[1:]:
        raise DataError(
            f"{where}: it holds no samples (or an empty dimension). Fix: point the {role} "
            "source at a file that contains at least one image."
        )


def _check_float_values(array: np.ndarray, file: Path, role: str) -> None:
    """Return None; raise DataError if a float array has non-finite values or leaves [0, 1]."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.argwhere(~finite)[0][0])
        raise DataError(
            f"The float array in {file} ({role} set) contains NaN or infinite values "
            f"({int((~finite).sum())} of them, first in sample {bad}); expected finite values "
            "in [0, 1]. Fix: clean or drop those samples before saving."
        )
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"The float array in {file} ({role} set) has values in [{low:g}, {high:g}]; "
            "expected [0, 1]. Fix: rescale it, e.g. (a + 1) / 2 for data in [-1, 1] or a / 255 "
            "for 0..255, or save 0..255 data as uint8."
        )
