"""The chunk store: scores saved chunk by chunk as they are computed, so a killed audit resumes.

Layout: ``ROOT/<key>/<role>-<start>-<stop>.npz``, one file per chunk. ``key`` is the sha256 of the
chunk key material: the score cache's material (model weights, sample files and indices, attack
parameters, the scoring code, seed, dtype, package version) extended with what could change a
score's last bits (batch and chunk size, device type, ``runtime.compile``). Each file carries that
material itself, the chunk's place (role, start, stop), its sample noise keys, its float64 scores
and a sha256 over all of them. A chunk is used only when its stored material equals the expected
one, its digest checks, and it holds exactly the expected sample keys with finite scores; anything
else (a file copied from another model's folder, a flipped byte, random bytes, NaN scores, another
length) is a miss: the chunk is scored again and :meth:`ChunkStore.load` says why, so the audit can
warn. The folder name alone is never trusted. Files are written to a temporary name and renamed,
so a run killed mid-write leaves no half chunk behind; they are world-readable like the score
cache's, so a store on a shared folder serves every user.

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
from typing import Any

import numpy as np

from naa_guard.errors import OutputError

_KEY = re.compile(r"[0-9a-f]{64}")
ROLES = ("members", "nonmembers", "control")
CHUNK_FORMAT = 2  # bump when the layout of a chunk file changes
FILE_MODE = 0o644  # as the score cache and pytest's own cache files: readable by every user of a shared cache


def canonical(material: dict[str, Any]) -> str:
    """Return the JSON text a key material is hashed and stored as (sorted keys, anything else as str)."""
    return json.dumps(material, sort_keys=True, default=str)


def material_key(material: dict[str, Any]) -> str:
    """Return the sha256 hex key of a key material."""
    return hashlib.sha256(canonical(material).encode()).hexdigest()


def _payload_digest(header: str, keys: np.ndarray, scores: np.ndarray) -> str:
    digest = hashlib.sha256(header.encode())
    digest.update(b"\0" + np.ascontiguousarray(keys, dtype="<i8").tobytes() + b"\0" + np.ascontiguousarray(scores, dtype="<f8").tobytes())
    return digest.hexdigest()


def _differing(stored: object, expected: dict[str, Any]) -> str:
    """Return which top-level parts of two key materials differ, for a warning a person can act on."""
    if not isinstance(stored, dict):
        return "its stored key is not a key material"
    names = []
    for name in sorted(set(stored) | set(expected)):
        mine, theirs = stored.get(name), expected.get(name)
        if isinstance(mine, dict) and isinstance(theirs, dict):  # the score key's parts: model, members, attack, ...
            names += [part for part in sorted(set(mine) | set(theirs)) if mine.get(part) != theirs.get(part)]
        elif mine != theirs:
            names.append(name)
    return f"its stored key differs in {', '.join(names)}: it was written for another model, data set, attack or setting"


def check_store_root(root: Path, where: str) -> None:
    """Return None; raise OutputError when ``root`` (or the nearest existing folder above it) is a file, not a folder.

    A store whose folder is not writable is not checked here: it can still be read (a re-gate), and a failed write costs a warning.
    """
    existing = Path(root)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file, not a folder" if existing == Path(root) else f"lies under {existing}, which is a file"
        raise OutputError(
            f"{where} {root} {what}; the score store keeps one file per chunk in a folder. "
            "Fix: give a folder path (it is created if missing), or move the file away."
        )


class ChunkStore:
    """Per-chunk score files under a folder; safe for concurrent writers (one rank per chunk)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def material_for(score_material: dict[str, Any], **numerics: object) -> dict[str, Any]:
        """Return a chunk key material: a score key material and the settings that could change a score's last bits."""
        return json.loads(canonical({"scores": score_material, **numerics}))

    def path_for(self, key: str, role: str, start: int, stop: int) -> Path:
        """Return the file that holds one chunk's scores."""
        if not _KEY.fullmatch(key) or role not in ROLES:
            raise ValueError(f"chunk store keys are sha256 hex digests and roles one of {ROLES}; got {key!r}, {role!r}")
        return self.root / key / f"{role}-{start:09d}-{stop:09d}.npz"

    def load(self, material: dict[str, Any], role: str, start: int, stop: int, sample_keys: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        """Return (the chunk's stored scores, None) when the file is this chunk's, else (None, why not; None for no file).

        A file that is not this chunk's exactly (another key, another place, a damaged payload,
        other samples, non-finite scores) is never used: the caller scores the chunk again,
        overwrites the file and warns with the reason.
        """
        path = self.path_for(material_key(material), role, start, stop)
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: np.asarray(stored[name]) for name in stored.files}
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            return None, f"the file cannot be read as a chunk ({type(exc).__name__}: {exc})"
        problem = self._problem(arrays, material, role, start, stop, np.asarray(sample_keys, dtype=np.int64))
        return (None, problem) if problem is not None else (arrays["scores"], None)

    @staticmethod
    def _problem(arrays: dict[str, np.ndarray], material: dict[str, Any], role: str, start: int, stop: int, expected: np.ndarray) -> str | None:
        """Return why stored arrays are not this chunk's scores (None: they are)."""
        if set(arrays) != {"header", "keys", "scores", "digest"}:
            return f"it holds the arrays {sorted(arrays)}, not a chunk of format {CHUNK_FORMAT} (header, keys, scores, digest)"
        header, keys, scores = str(arrays["header"]), arrays["keys"], arrays["scores"]
        if keys.dtype != np.int64 or scores.dtype != np.float64 or keys.ndim != 1 or scores.shape != keys.shape:
            return f"its keys ({keys.dtype}, {keys.shape}) and scores ({scores.dtype}, {scores.shape}) are not one float64 score per int64 sample key"
        if str(arrays["digest"]) != _payload_digest(header, keys, scores):
            return "its integrity digest does not match its contents (a damaged or edited file)"
        try:
            stored = json.loads(header)
        except ValueError:
            return "its header is not JSON"
        if not isinstance(stored, dict) or stored.get("format") != CHUNK_FORMAT:
            return f"it is not a chunk of format {CHUNK_FORMAT}"
        if stored.get("key") != json.loads(canonical(material)):
            return _differing(stored.get("key"), material)
        if (stored.get("role"), stored.get("start"), stored.get("stop")) != (role, start, stop):
            return f"it holds the chunk {stored.get('role')} {stored.get('start')}..{stored.get('stop')}, not {role} {start}..{stop}"
        if keys.shape != expected.shape:
            return f"it holds {len(keys)} scores for a chunk of {len(expected)} samples"
        if not np.array_equal(keys, expected):
            return "it holds the scores of other samples"
        if not np.isfinite(scores).all():
            return f"it holds {int((~np.isfinite(scores)).sum())} non-finite score(s)"
        return None

    def save(self, material: dict[str, Any], role: str, start: int, stop: int, sample_keys: np.ndarray, scores: np.ndarray) -> None:
        """Store one chunk's scores with its key and a digest, atomically: readers see no file or the whole file."""
        path = self.path_for(material_key(material), role, start, stop)
        keys, values = np.asarray(sample_keys, dtype=np.int64), np.asarray(scores, dtype=np.float64)
        header = json.dumps({"format": CHUNK_FORMAT, "key": json.loads(canonical(material)), "role": role, "start": start, "stop": stop}, sort_keys=True)
        buffer = io.BytesIO()
        np.savez(buffer, header=np.asarray(header), keys=keys, scores=values, digest=np.asarray(_payload_digest(header, keys, values)))
        try:
            write_atomically(path, buffer.getvalue(), mode=FILE_MODE)
        except OSError as exc:
            # The scores stand without their copy on disk; a read-only or full disk only costs a resume.
            warnings.warn(f"naa-guard: could not save the chunk {path}: {exc}", stacklevel=2)


def write_atomically(path: Path, payload: bytes, *, mode: int = 0o600, make_parents: bool = True) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: readers see all of it or nothing.

    The file gets ``mode`` (mkstemp's owner-only by default). With ``make_parents=False`` a missing
    folder is an error (FileNotFoundError) rather than created.
    """
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
