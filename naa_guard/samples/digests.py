"""Content digests: of decoded samples (the overlap check) and of files (cache keys, fingerprints).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.errors import DataError

_CHUNK = 1 << 20


class _Memo:
    """One audit's file digests: per list of files, and the lists expected later (read in the same pass)."""

    def __init__(self) -> None:
        self.digests: dict[tuple[Path, ...], str] = {}
        self.expected: list[tuple[Path, ...]] = []


# Digests already computed in the running audit (see reuse_file_digests); None outside one.
_DIGESTS: ContextVar[_Memo | None] = ContextVar("naa_guard_file_digests", default=None)


def sample_digests(images: np.ndarray) -> list[str]:
    """Return the sha256 hex digest of each sample's float32 bytes (one per leading index)."""
    as_f32 = np.ascontiguousarray(images, dtype=np.float32)
    return [hashlib.sha256(sample.tobytes()).hexdigest() for sample in as_f32]


def files_digest(files: Iterable[Path]) -> str:
    """Return one sha256 hex digest over the (name, size, content) of `files`, sorted by path.

    Inside :func:`reuse_file_digests` (one audit) each distinct list is read once, and the lists
    announced by :func:`expect_file_lists` that lie within the one asked for are digested in the
    same pass over its files: a latent model's encoder files (the encodings' key) within all its
    files (the scores' key, computed first whenever scores are cached or stored), so each file is
    read once. The digests are the same as without the memo.
    """
    paths = _sorted_paths(files)
    memo = _DIGESTS.get()
    if memo is None:
        return _digest_lists([paths])[0]
    if paths not in memo.digests:
        covered = set(paths)  # expected lists within this one cost no extra read; a larger one may never be needed
        group = [paths, *(other for other in dict.fromkeys(memo.expected) if other != paths and other not in memo.digests and set(other) <= covered)]
        memo.digests.update(zip(group, _digest_lists(group)))
    return memo.digests[paths]


def expect_file_lists(*lists: Iterable[Path]) -> None:
    """Announce lists of files the running audit may digest: a larger one asked for first digests those within it in the same read.

    Outside :func:`reuse_file_digests` nothing is remembered (every digest reads its files).
    """
    memo = _DIGESTS.get()
    if memo is not None:
        memo.expected.extend(_sorted_paths(files) for files in lists)


@contextmanager
def reuse_file_digests() -> Iterator[None]:
    """Within the block (or the decorated call), :func:`files_digest` reads each file once.

    For one audit only: its files are taken not to change while it runs. Outside, every call
    reads the files again, so a file rewritten between two audits is always seen.
    """
    token = _DIGESTS.set(_Memo() if _DIGESTS.get() is None else _DIGESTS.get())
    try:
        yield
    finally:
        _DIGESTS.reset(token)


def _sorted_paths(files: Iterable[Path]) -> tuple[Path, ...]:
    # Sorted so the key does not depend on the caller's order.
    return tuple(sorted((Path(f) for f in files), key=lambda p: p.as_posix()))


def _digest_lists(lists: list[tuple[Path, ...]]) -> list[str]:
    """Return the digest of each sorted list, reading each distinct file once (a list naming a file twice is read on its own)."""
    single = [i for i, paths in enumerate(lists) if len(set(paths)) == len(paths)]
    digests: dict[int, str] = {i: _digest_files(paths) for i, paths in enumerate(lists) if i not in single}
    hashers = {i: hashlib.sha256() for i in single}
    readers: dict[Path, list[int]] = {}
    for i in single:
        for file in lists[i]:
            readers.setdefault(file, []).append(i)
    # One pass in sorted order: every list receives its own files in its own (sorted) order.
    for file in sorted(readers, key=lambda p: p.as_posix()):
        _feed(file, [hashers[i] for i in readers[file]])
    digests.update((i, hasher.hexdigest()) for i, hasher in hashers.items())
    return [digests[i] for i in range(len(lists))]


def _digest_files(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for file in paths:
        _feed(file, [digest])
    return digest.hexdigest()


def _feed(file: Path, digests: list[Any]) -> None:
    """Feed the file's (name, size, content) to each digest, reading it once."""
    # The bare name (not the full path) is hashed so that moving the whole data folder keeps the cache valid.
    try:
        size = file.stat().st_size
        header = f"{file.name}\0{size}\0".encode()
        for digest in digests:
            digest.update(header)
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                for digest in digests:
                    digest.update(chunk)
    except OSError as exc:
        raise DataError(
            f"Cannot read {file} to fingerprint the data ({exc.strerror or exc}). "
            "Fix: make sure the file still exists and is readable; it may have been "
            "moved or deleted after the sample set was loaded."
        ) from exc
