"""The chunk store: scores saved chunk by chunk as they are computed, so a killed audit resumes.

Layout: ``ROOT/<key>/<role>-<start>-<stop>.npz``, one file per chunk, holding the chunk's sample
noise keys and float64 scores. ``key`` is the score cache's content key (model weights, sample
files and indices, attack parameters, seed, dtype, package version) extended with what could
change a score's last bits (batch and chunk size, device type, ``runtime.compile``), so a resumed
run never mixes scores from another model, data set, attack setting or numeric path. A chunk is
used only if its file holds exactly the expected sample keys and finite scores; anything else
(a truncated or foreign file) is a miss and the chunk is scored again. Files are written to a
temporary name and renamed, so a run killed mid-write leaves no half chunk behind.

Every rank writes its own chunks; a multi-node run resumes fully only where the ranks share the
folder (otherwise each node resumes its own chunks, and the rest are scored again).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

_KEY = re.compile(r"[0-9a-f]{64}")
ROLES = ("members", "nonmembers", "control")


class ChunkStore:
    """Per-chunk score files under a folder; safe for concurrent writers (one rank per chunk)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key_for(score_key: str, **numerics: object) -> str:
        """Return the store key of a score key and the settings that could change a score's last bits."""
        return hashlib.sha256(json.dumps({"scores": score_key, **numerics}, sort_keys=True).encode()).hexdigest()

    def path_for(self, key: str, role: str, start: int, stop: int) -> Path:
        """Return the file that holds one chunk's scores."""
        if not _KEY.fullmatch(key) or role not in ROLES:
            raise ValueError(f"chunk store keys are sha256 hex digests and roles one of {ROLES}; got {key!r}, {role!r}")
        return self.root / key / f"{role}-{start:09d}-{stop:09d}.npz"

    def load(self, key: str, role: str, start: int, stop: int, sample_keys: np.ndarray) -> np.ndarray | None:
        """Return the chunk's stored scores if they are complete and for exactly these samples, else None."""
        try:
            with np.load(self.path_for(key, role, start, stop), allow_pickle=False) as stored:
                keys, scores = np.asarray(stored["keys"]), np.asarray(stored["scores"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # damaged: score the chunk again and overwrite it
        expected = np.asarray(sample_keys, dtype=np.int64)
        valid = (
            keys.dtype == np.int64 and scores.dtype == np.float64 and keys.shape == expected.shape == scores.shape
            and np.array_equal(keys, expected) and bool(np.isfinite(scores).all())
        )  # fmt: skip
        return scores if valid else None

    def save(self, key: str, role: str, start: int, stop: int, sample_keys: np.ndarray, scores: np.ndarray) -> None:
        """Store one chunk's scores atomically: readers see no file or the whole file."""
        path = self.path_for(key, role, start, stop)
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.asarray(sample_keys, dtype=np.int64), scores=np.asarray(scores, dtype=np.float64))
        try:
            write_atomically(path, buffer.getvalue())
        except OSError as exc:
            # The scores stand without their copy on disk; a read-only or full disk only costs a resume.
            warnings.warn(f"naa-guard: could not save the chunk {path}: {exc}", stacklevel=2)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
