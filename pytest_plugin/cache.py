"""The score cache: an attack's scores kept across runs, one ``.npz`` file per content key.

It lives in pytest's cache directory (``.pytest_cache/d/naa-guard``), so ``--cache-clear`` empties
it. Keys are content hashes of the weights, the sample files, the attack parameters, the attack's
implementation and the package version (``naa_guard.audit.cache_key``): a changed model, data set
or attack code simply misses. An entry is never trusted blindly: the audit checks every entry it
reads against the samples' indices, their counts and finiteness, and recomputes a bad one with a
warning (``naa_guard.audit.cached_scores_problem``). A read-only or full cache folder costs time,
never an error: a failed write is reported by the caller as a warning.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

_KEY = re.compile(r"[0-9a-f]{16,128}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class DirectoryScoreCache:
    """A ``naa_guard.audit.ScoreCache`` over a folder; safe for concurrent readers and writers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        """Return the file that holds the scores of ``key``."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"score cache keys are lowercase hex digests; got {key!r}")
        return self.root / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """Return every array stored under ``key`` (scores by role, and what the caller stored beside them), or None on a miss."""
        path = self.path_for(key)
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: np.asarray(stored[name]) for name in stored.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            # A damaged entry (a truncated copy, a manual edit) is a miss: the audit recomputes
            # the scores and overwrites it.
            return None

    def put(self, key: str, scores: dict[str, np.ndarray]) -> None:
        """Store the arrays of ``key``, atomically: readers see the old file or the new one.

        Raises OSError when the folder cannot be written; the audit turns that into a warning.
        """
        path = self.path_for(key)
        bad = [name for name in scores if not _NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"score cache array names must be identifiers; got {bad!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: os.replace is atomic on one file system, so
        # two xdist workers writing the same key never leave a half-written file.
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, **{name: np.asarray(array) for name, array in scores.items()})
            os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a shared CI cache needs it readable
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
