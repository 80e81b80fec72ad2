"""The score cache: an attack's scores kept across runs, one ``.npz`` file per content key.

It lives in pytest's cache directory (``.pytest_cache/d/naa-guard``), so ``--cache-clear`` empties
it. Keys are content hashes of the weights, the sample files, the attack parameters and the
package version (``naa_guard.audit.cache_key``): a changed model or data set simply misses.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

_KEY = re.compile(r"[0-9a-f]{16,128}")
ROLES = ("members", "nonmembers")


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
        """Return the cached member and non-member scores of ``key``, or None on a miss."""
        path = self.path_for(key)
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {role: np.asarray(stored[role], dtype=np.float64) for role in ROLES}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            # A damaged entry (a truncated copy, a manual edit) is a miss: the audit recomputes
            # the scores and overwrites it.
            return None

    def put(self, key: str, scores: dict[str, np.ndarray]) -> None:
        """Store the scores of ``key``, atomically: readers see the old file or the new one."""
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Write beside the target, then rename: os.replace is atomic on one file system, so
            # two xdist workers writing the same key never leave a half-written file.
            handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f".{key[:16]}-", suffix=".tmp")
            try:
                with os.fdopen(handle, "wb") as stream:
                    np.savez(stream, **{role: np.asarray(scores[role], dtype=np.float64) for role in ROLES})
                os.chmod(temporary, 0o644)  # mkstemp makes it owner-only; a shared CI cache needs it readable
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # The gate verdict does not depend on the cache; a read-only or full disk only costs time.
            warnings.warn(f"naa-guard: could not write the score cache entry {path}: {exc}", stacklevel=2)
