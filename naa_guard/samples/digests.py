"""Content digests: of decoded samples (the overlap check) and of files (cache keys, fingerprints).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from naa_guard.errors import DataError

_CHUNK = 1 << 20


# Digests already computed in the running audit (see reuse_file_digests); None outside one.
_DIGESTS: ContextVar[dict[tuple[Path, ...], str] | None] = ContextVar("naa_guard_file_digests", default=None)


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
