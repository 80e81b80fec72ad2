"""The score cache's secret: entries are sealed with an HMAC under it, so only its holder writes entries that are used.

A score-cache entry carries its key material and a digest (:func:`naa_guard.scoring.keyedfiles.seal`).
A plain digest only catches damage: whoever edits an entry (the members' scores replaced by the
non-members', say) can recompute it. Under a secret the cache folder does not hold, an entry
written or edited by anyone else (a CI cache restored from another branch, a copied
``.pytest_cache``) fails its check and is recomputed with a warning.

The secret is ``NAA_GUARD_CACHE_KEY`` when set (a CI secret shared by the runs that may share a
cache), else a random key kept in ``$XDG_CONFIG_HOME/naa-guard/cache.key`` (default
``~/.config``), readable by this user only and created on first use. Where neither can be had,
each process draws its own: entries are then never reused across runs (time, never a verdict).
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path

from naa_guard.userfiles import open_regular

ENV = "NAA_GUARD_CACHE_KEY"


def key_file() -> Path:
    """Return the file that holds this user's cache secret."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "naa-guard" / "cache.key"


def cache_secret() -> bytes:
    """Return the secret score-cache entries are sealed and checked with (see the module docstring)."""
    if os.environ.get(ENV):
        return os.environ[ENV].encode()
    return _user_secret(str(key_file()))


def _stored_secret(file: Path) -> bytes | None:
    """Return the secret kept in ``file``; None when it is absent, too short, or not a regular file (never opened then)."""
    try:
        with open_regular(file, OSError, "the cache key file", "") as handle:
            stored = handle.read().strip()
    except OSError:
        return None
    return stored if len(stored) >= 32 else None


@functools.lru_cache(maxsize=None)
def _user_secret(path: str) -> bytes:
    file = Path(path)
    stored = _stored_secret(file)
    if stored is not None:
        return stored
    fresh = secrets.token_hex(32).encode()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile (or it is no usable key): use theirs, else this process's own
        return _stored_secret(file) or fresh
    except OSError:  # no writable config folder: this process's own secret, entries not reused across runs
        return fresh
    with os.fdopen(handle, "wb") as stream:
        stream.write(fresh)
    return fresh
