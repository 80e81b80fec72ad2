"""List a sample set (members, non-members or a control set) and decode it into model-ready arrays.

A source is an image folder, a ``.npy`` / ``.npz`` array file, or a ``.csv`` / ``.jsonl``
manifest. Every format goes through the same preprocessing, so identical pixels give identical
float32 bytes: the member / non-member overlap check relies on it.

An image whose size differs from the model's is an error unless ``fit`` (the policy's
``data.fit``) says how to prepare it (:mod:`naa_guard.imagefit`); dropped alpha channels, fitted
images and skipped non-regular files are reported in the set's ``notes``. Array files are read
without unpickling, and no message ever suggests enabling it.

:func:`list_samples` only lists a set (file names, indices, captions): its images are decoded
chunk by chunk, as a batch needs them (:meth:`SampleSet.decode`), so an audit's memory does not
grow with the number of images. :func:`load_samples` decodes the whole set at once, for small sets.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from PIL import Image

from naa_guard.captions import caption_column, clean_caption, folder_captions
from naa_guard.errors import DataError
from naa_guard.imagefit import fit_array, fit_image

__all__ = ["IMAGE_EXTENSIONS", "SampleSet", "files_digest", "list_samples", "load_samples", "sample_digests"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")
_FLOAT_SIZES = (2, 4, 8)  # float16/32/64 bytes; checked by kind so big-endian files pass
_ARRAY_CHANNELS = (1, 3, 4)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R 601, as PIL's "L"
_CHUNK = 1 << 20
# Digests already computed in the running audit (see reuse_file_digests); None outside one.
_DIGESTS: ContextVar[dict[tuple[Path, ...], str] | None] = ContextVar("naa_guard_file_digests", default=None)


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
    log: _Notes | None = None  # what preprocessing did beyond conversion, filled as images are decoded

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


class _ImageFiles:
    """Image files (a folder's or a manifest's), decoded one by one when read."""

    def __init__(self, entries: list[_Entry], size: int, channels: int, role: str, notes: _Notes) -> None:
        self.entries, self.size, self.channels, self.role, self.notes = entries, size, channels, role, notes

    def read(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.empty((0, self.channels, self.size, self.size), dtype=np.float32)
        return _stack([_decode_image(self.entries[row].file, self.size, self.channels, self.role, self.notes) for row in rows])

    def origin(self, row: int) -> str:
        return str(self.entries[row].file)


class _ArrayFile:
    """A .npy (memory-mapped) or .npz array, opened on first read in each process (not pickled)."""

    def __init__(self, file: Path, size: int, channels: int, role: str, notes: _Notes, array: np.ndarray | None = None) -> None:
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


def list_samples(
    source: str | Path,
    *,
    size: int,
    channels: int,
    limit: int | None = None,
    seed: int = 0,
    role: str = "members",
    allow_outside: bool = False,
    fit: str | None = None,
    caption_column: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
) -> SampleSet:
    """Return the sample set at `source`, listed and checked but not decoded (see SampleSet.decode).

    ``fit`` (None, "resize", "center_crop" or "pad") says how images of another size are
    brought to ``size`` when decoded; None makes a size mismatch a DataError. Captions come from
    a manifest's caption column, or a folder's metadata files and sidecars (:mod:`naa_guard.captions`);
    ``caption_column`` names the column when it is neither ``caption`` nor ``text``. A Hugging Face
    dataset (parquet, save_to_disk) takes ``split`` and ``image_column`` (:mod:`naa_guard.hfdataset`).
    """
    _check_arguments(size, channels, limit, role)
    path = Path(source)
    check_source(path, role)
    notes = _Notes(role, size, fit)
    from naa_guard.hfdataset import is_dataset, list_dataset  # imports this module

    if is_dataset(path):
        return list_dataset(path, size=size, channels=channels, limit=limit, seed=seed, role=role, notes=notes, split=split, image_column=image_column, caption_name=caption_column)
    is_folder, suffix = path.is_dir(), path.suffix.lower()
    if not is_folder and suffix in ARRAY_SUFFIXES:
        return _list_array_file(path, size, channels, limit, seed, role, notes)
    if not is_folder and suffix not in MANIFEST_SUFFIXES:
        raise DataError(
            f"The {role} source {path} has the unsupported form '{suffix or '(no suffix)'}'. "
            f"Supported: a folder of images ({', '.join(IMAGE_EXTENSIONS)}), a .npy or .npz "
            "array file, a .csv / .jsonl manifest with a 'path' column, or a Hugging Face dataset "
            "(.parquet, a save_to_disk folder). Fix: point the "
            "source at one of these (a single image must be put in a folder)."
        )
    entries, caption_files = _list_folder(path, role, notes, caption_column) if is_folder else (_list_manifest(path, role, allow_outside, caption_column), ())
    indices = _choose(len(entries), limit, seed)
    chosen = [entries[i] for i in indices]  # only these are ever decoded
    # A folder's listing decides which file gets which index (and so its noise seed), so a
    # cache key must see every file; a manifest fixes the listing itself, so chosen files do.
    if is_folder:
        files = (*(e.file for e in entries), *caption_files)
    else:
        files = (path, *dict.fromkeys(e.file for e in chosen))
    return SampleSet(
        reader=_ImageFiles(chosen, size, channels, role, notes),
        rows=np.arange(len(chosen), dtype=np.int64),
        names=tuple(e.name for e in chosen),
        indices=indices,
        captions=tuple(e.caption for e in chosen),
        source=path,
        files=files,
        log=notes,
    )


def load_samples(
    source: str | Path,
    *,
    size: int,
    channels: int,
    limit: int | None = None,
    seed: int = 0,
    role: str = "members",
    allow_outside: bool = False,
    fit: str | None = None,
    caption_column: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
) -> SampleSet:
    """Return the sample set at `source`, every image decoded to float32 (N, channels, size, size).

    ``fit`` (None, "resize", "center_crop" or "pad") says how images of another size are
    brought to ``size``; None makes a size mismatch a DataError.
    """
    listed = list_samples(source, size=size, channels=channels, limit=limit, seed=seed, role=role, allow_outside=allow_outside, fit=fit, caption_column=caption_column, split=split, image_column=image_column)
    return listed.materialize()


def check_source(source: str | Path, role: str) -> None:
    """Return None; raise DataError if a sample source does not exist or is neither a folder nor a regular file.

    Cheap (two stats, no imports beyond this module), so a policy's paths can be checked before
    any model code loads. A named pipe or a device would block a read forever.
    """
    path = Path(source)
    if not path.exists():
        from naa_guard.hfdataset import hub_name_hint

        raise DataError(
            f"The {role} source {path} does not exist (looked for {path.absolute()}). "
            "Fix: check the path for a typo, or give an absolute path to an image folder, "
            "a .npy / .npz array file, a .csv / .jsonl manifest or a local Hugging Face dataset." + hub_name_hint(path)
        )
    if not (path.is_dir() or path.is_file()):
        raise DataError(
            f"The {role} source {path} is neither a folder nor a regular file (a named pipe, socket or device); "
            "reading it could block forever. Fix: point the source at an image folder, an array file or a manifest."
        )


class _Notes:
    """Counts what preprocessing did to a set, for the audit's report."""

    def __init__(self, role: str, size: int, fit: str | None) -> None:
        self.role, self.size, self.fit = role, size, fit
        # Keyed by sample name: a streamed set decodes an image once per pass (checks, each attack).
        self.fitted: set[str] = set()
        self.converted: dict[str, set[str]] = {}  # "color to grayscale" / "grayscale to RGB" -> sample names
        self.alpha: dict[str, None] = {}  # ordered set of sample names
        self.skipped: list[str] = []

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


def sample_digests(images: np.ndarray) -> list[str]:
    """Return the sha256 hex digest of each sample's float32 bytes (one per leading index)."""
    as_f32 = np.ascontiguousarray(images, dtype=np.float32)
    return [hashlib.sha256(sample.tobytes()).hexdigest() for sample in as_f32]


def files_digest(files: Iterable[Path]) -> str:
    """Return one sha256 hex digest over the (name, size, content) of `files`, sorted by path.

    Inside :func:`reuse_file_digests` (one audit) each distinct list of files is read once: the
    score cache key of every attack and the baseline fingerprint hash the same sample and model
    files, which for a latent pipeline are gigabytes.
    """
    # Sorted so the key does not depend on the caller's order.
    paths = tuple(sorted((Path(f) for f in files), key=lambda p: p.as_posix()))
    memo = _DIGESTS.get()
    if memo is None:
        return _digest_files(paths)
    if paths not in memo:
        memo[paths] = _digest_files(paths)
    return memo[paths]


@contextmanager
def reuse_file_digests() -> Iterator[None]:
    """Within the block (or the decorated call), :func:`files_digest` reads each list of files once.

    For one audit only: its files are taken not to change while it runs. Outside, every call
    reads the files again, so a file rewritten between two audits is always seen.
    """
    token = _DIGESTS.set({} if _DIGESTS.get() is None else _DIGESTS.get())
    try:
        yield
    finally:
        _DIGESTS.reset(token)


def _digest_files(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    # The bare name (not the full path) is hashed so that moving the whole data folder keeps the cache valid.
    for file in paths:
        try:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}\0".encode())
            with file.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(
                f"Cannot read {file} to fingerprint the data ({exc.strerror or exc}). "
                "Fix: make sure the file still exists and is readable; it may have been "
                "moved or deleted after the sample set was loaded."
            ) from exc
    return digest.hexdigest()


# --- arguments and subsampling ------------------------------------------------------------


def _check_arguments(size: int, channels: int, limit: int | None, role: str) -> None:
    """Return None; raise DataError if size, channels or limit are unusable."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise DataError(
            f"Image size for the {role} set must be a positive integer, got {size!r}. "
            "Fix: set the size to the model's input resolution (e.g. 32 or 64)."
        )
    if channels not in (1, 3):
        raise DataError(
            f"Channel count for the {role} set must be 1 (grayscale) or 3 (RGB), got "
            f"{channels!r}. Fix: set it to the model's number of input channels."
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise DataError(
            f"limit for the {role} set must be a positive integer or omitted, got {limit!r}. "
            "Fix: remove the limit to use every sample, or give how many to draw (>= 1)."
        )


def _choose(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Return the sorted int64 source indices kept: all of them, or a seeded subset of `limit`."""
    if limit is None or limit >= count:
        return np.arange(count, dtype=np.int64)
    chosen = np.random.default_rng(seed).choice(count, size=limit, replace=False)
    return np.sort(chosen).astype(np.int64)  # sorted: keep the source's order


# --- image folders ------------------------------------------------------------------------


class _Entry(NamedTuple):
    """One image file of a folder or manifest, before decoding."""

    name: str  # relative posix path
    file: Path
    caption: str | None


def _list_folder(folder: Path, role: str, notes: _Notes, caption_column: str | None) -> tuple[list[_Entry], tuple[Path, ...]]:
    """Return the image files under `folder`, recursively, sorted by relative posix path, with their
    captions (metadata files, sidecars), and the caption files read."""
    found: list[_Entry] = []
    # Hidden entries are skipped: macOS "._x.png" sidecars and ".ipynb_checkpoints" copies
    # carry image suffixes but are not samples. Symlinked folders are not descended (no loops).
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                file = Path(root) / name
                if not file.is_file():  # a named pipe would block the decoder forever
                    notes.skipped.append(file.relative_to(folder).as_posix())
                    continue
                found.append(_Entry(file.relative_to(folder).as_posix(), file, None))
    if not found:
        raise DataError(
            f"The {role} folder {folder} contains no images (searched recursively, hidden "
            f"files skipped). Expected files ending in {', '.join(IMAGE_EXTENSIONS)} (any "
            "case). Fix: point the source at the folder that holds the images, or convert "
            "them to one of these formats."
        )
    found.sort(key=lambda entry: entry.name)
    captions = folder_captions(folder, [entry.name for entry in found], role, caption_column)
    return [entry._replace(caption=captions.captions[entry.name]) for entry in found], captions.files


# --- single images ------------------------------------------------------------------------


def _decode_image(file: Path, size: int, channels: int, role: str, notes: _Notes) -> np.ndarray:
    """Return the image in `file` as uint8 (channels, size, size)."""
    try:
        with Image.open(file) as img:
            img.load()
            mode = img.mode
            if mode.startswith(("I", "F")):
                raise DataError(
                    f"Image {file} in the {role} set has the high-bit-depth mode '{mode}'; "
                    "expected 8 bits per channel (L, RGB, RGBA, P, ...). Fix: save it as an "
                    "8-bit image; naa-guard does not guess how to scale it down."
                )
            return _prepare(img, size, channels, notes, f"Image {file} in the {role} set", str(file))
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
        raise DataError(
            f"Cannot decode image {file} in the {role} set ({type(exc).__name__}: {exc}). "
            "Fix: re-export or remove the file; it is corrupt, truncated or not an image "
            "despite its suffix."
        ) from exc


def _prepare(img: Image.Image, size: int, channels: int, notes: _Notes, where: str, name: str) -> np.ndarray:
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


def _stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """Return uint8 (C, H, W) images stacked and scaled to float32 (N, C, H, W) in [-1, 1]."""
    batch = np.stack(images).astype(np.float32)
    return batch / np.float32(127.5) - np.float32(1.0)


# --- array files --------------------------------------------------------------------------


def _list_array_file(file: Path, size: int, channels: int, limit: int | None, seed: int, role: str, notes: _Notes) -> SampleSet:
    """Return the sample set stored in a .npy or .npz file, its layout checked, not yet decoded."""
    array = _read_array(file, role)
    _check_layout(array, file, role)
    indices = _choose(array.shape[0], limit, seed)
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


def _decode_array_rows(array: np.ndarray, rows: np.ndarray, file: Path, size: int, channels: int, role: str, notes: _Notes) -> np.ndarray:
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
        return _stack([_prepare(_uint8_to_pil(sample), size, channels, notes, f"Sample {name} of the {role} set", name) for sample, name in zip(chosen, names, strict=True)])
    _check_float_values(chosen, file, role)
    return np.stack([_prepare_float(sample, size, channels, notes, f"Sample {name} of the {role} set", name) for sample, name in zip(chosen, names, strict=True)])


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


def _uint8_to_pil(sample: np.ndarray) -> Image.Image:
    """Return a uint8 H,W or H,W,C sample as a PIL image (L, RGB or RGBA)."""
    if sample.ndim == 3 and sample.shape[2] == 1:
        sample = sample[:, :, 0]
    # Through PIL like image files, so a png folder and its .npy dump give identical bytes.
    return Image.fromarray(np.ascontiguousarray(sample))


def _prepare_float(sample: np.ndarray, size: int, channels: int, notes: _Notes, where: str, name: str) -> np.ndarray:
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


# --- manifests ----------------------------------------------------------------------------


_Row = tuple[int, str, str | None]  # a manifest row: (line number, path as written, caption)


def _list_manifest(manifest: Path, role: str, allow_outside: bool, column: str | None) -> list[_Entry]:
    """Return the rows of a .csv / .jsonl manifest, each file checked to exist."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports add a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"Cannot read the {role} manifest {manifest} ({exc}). "
            "Fix: make it a readable UTF-8 text file."
        ) from exc
    csv_form = manifest.suffix.lower() == ".csv"
    rows = _parse_csv(text, manifest, role, column) if csv_form else _parse_jsonl(text, manifest, role, column)
    if not rows:
        raise DataError(
            f"The {role} manifest {manifest} lists no samples. "
            "Fix: add one row per image with at least a 'path' value."
        )
    # Every row is checked (a cheap stat) so that errors do not depend on the seed.
    return [_resolve_row(manifest, row, role, allow_outside) for row in rows]


def _parse_csv(text: str, manifest: Path, role: str, column: str | None) -> list[_Row]:
    """Return (line, path, caption) for each data row of a CSV manifest with a header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[_Row] = []
    try:
        header = reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if "path" not in header:
            raise DataError(
                f"The {role} manifest {manifest} has no 'path' column (line 1 header: "
                f"{', '.join(header) or 'empty'}). Fix: add a header line whose columns "
                "include 'path' (and optionally 'caption'), one image per row."
            )
        chosen = caption_column(header, column, f"The {role} manifest {manifest}")
        for record in reader:
            path = (record.get("path") or "").strip()
            rows.append((reader.line_num, path, clean_caption(record.get(chosen)) if chosen else None))
    except csv.Error as exc:
        raise DataError(
            f"Line {reader.line_num} of the {role} manifest {manifest} is not valid CSV ({exc}). "
            "Fix: correct that line (quote fields that hold commas or newlines)."
        ) from exc
    return rows


def _parse_jsonl(text: str, manifest: Path, role: str, column: str | None) -> list[_Row]:
    """Return (line, path, caption) for each non-blank line of a JSON-lines manifest."""
    records: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) carry no sample
        where = f"Line {number} of the {role} manifest {manifest}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno}). Fix: write one "
                'JSON object per line, e.g. {"path": "img/0001.png", "caption": "a cat"}.'
            ) from exc
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise DataError(
                f"{where} is {line.strip()[:80]!r}; expected a JSON object with a string "
                "'path' key. Fix: add the image path under \"path\" on that line."
            )
        records.append((number, record))
    chosen = caption_column({key for _, record in records for key in record}, column, f"The {role} manifest {manifest}")
    rows: list[_Row] = []
    for number, record in records:
        caption = record.get(chosen) if chosen else None
        if caption is not None and not isinstance(caption, str):
            raise DataError(
                f"Line {number} of the {role} manifest {manifest} has a caption of type {type(caption).__name__}; expected a string "
                "or null. Fix: quote the caption or remove it."
            )
        rows.append((number, str(record["path"]).strip(), clean_caption(caption)))
    return rows


def _resolve_row(manifest: Path, row: _Row, role: str, allow_outside: bool) -> _Entry:
    """Return the entry for a manifest row, its file checked to exist (and to stay inside)."""
    line, raw, caption = row
    where = f"Line {line} of the {role} manifest {manifest}"
    if not raw:
        raise DataError(f"{where} has an empty 'path'. Fix: give the image path on that line.")
    file = Path(os.path.normpath(manifest.parent / raw))
    root = manifest.parent.resolve()
    # resolve() follows symlinks, so a link inside the folder cannot reach outside it either.
    if not allow_outside and not file.resolve().is_relative_to(root):
        raise DataError(
            f"{where} points to '{raw}', which resolves to {file.resolve()}, outside the "
            f"manifest's folder {root}; a manifest may only reach files under its own folder. "
            "Fix: move the images under that folder (or the manifest above them), or, if this is "
            "intended, set data.allow_outside: true in the policy."
        )
    if file.exists() and not file.is_file():
        raise DataError(
            f"{where} points to '{raw}', which is not a regular file ({file}: a folder, pipe or device). "
            "Fix: list image files only."
        )
    if not file.is_file():
        raise DataError(
            f"{where} points to '{raw}', but no file exists at {file} (paths are relative to "
            "the manifest's folder). Fix: correct the path or restore the file."
        )
    return _Entry(Path(os.path.relpath(file, manifest.parent)).as_posix(), file, caption)
