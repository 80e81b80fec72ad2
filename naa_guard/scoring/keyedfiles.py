"""Files that carry their own key: arrays stored with the key material they were computed under.

The chunk store's encodings and summaries (:mod:`naa_guard.scoring.encodings`,
:mod:`naa_guard.scoring.samplepass`) are ``.npz`` files named by the sha256 of their key material.
Each holds that material itself in a JSON header (with whatever else the writer adds), its arrays,
and a sha256 over header and arrays. A file is used only when the stored material equals the
expected one and the digest checks; anything else (another key, a flipped byte, random bytes) is
a miss with a reason, and the caller computes the contents again. The file name alone is never
trusted. Writes go through a temporary file and a rename (no half file is ever read).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.scoring.chunks import FILE_MODE, canonical, material_key, write_atomically

HEADER, DIGEST = "header", "digest"  # reserved array names


def keyed_path(root: Path, material: dict[str, Any]) -> Path:
    """Return the file of a key material under ``root``: ``root/<sha256 of the material>.npz``."""
    return Path(root) / f"{material_key(material)}.npz"


def _digest(header: str, arrays: dict[str, np.ndarray], secret: bytes | None = None) -> str:
    digest = hmac.new(secret, header.encode(), hashlib.sha256) if secret is not None else hashlib.sha256(header.encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(b"\0" + name.encode() + b"\0" + str(array.dtype.str).encode() + b"\0" + repr(array.shape).encode() + b"\0" + array.tobytes())
    return digest.hexdigest()


def seal(material: dict[str, Any], arrays: dict[str, np.ndarray], fields: dict[str, Any] | None = None, *, secret: bytes | None = None) -> dict[str, np.ndarray]:
    """Return ``arrays`` with the key material (and the JSON-ready ``fields``) in a header, and a digest over both.

    With ``secret`` the digest is an HMAC under it: whoever lacks the secret cannot write an entry
    that :func:`unseal` accepts (an edited entry whose plain digest was recomputed is refused).
    """
    header = json.dumps({"key": json.loads(canonical(material)), "fields": fields or {}}, sort_keys=True)
    values = {name: np.asarray(array) for name, array in arrays.items()}
    if {HEADER, DIGEST} & set(values):
        raise ValueError(f"array names {HEADER!r} and {DIGEST!r} are reserved")
    return {**values, HEADER: np.asarray(header), DIGEST: np.asarray(_digest(header, values, secret))}


def unseal(material: dict[str, Any], stored: dict[str, np.ndarray], *, secret: bytes | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]] | str:
    """Return (arrays, fields) of a :func:`seal`-ed entry when it was sealed under ``material`` (and ``secret``); else why not."""
    arrays = dict(stored)
    if HEADER not in arrays or DIGEST not in arrays:
        return "it holds no key material and digest"
    header, digest = str(arrays.pop(HEADER)), str(arrays.pop(DIGEST))
    if not hmac.compare_digest(digest, _digest(header, arrays, secret)):
        return "its integrity digest does not match its contents (a damaged or edited entry, or one written under another cache secret)"
    try:
        stored_header = json.loads(header)
    except ValueError:
        return "its header is not JSON"
    if not isinstance(stored_header, dict) or stored_header.get("key") != json.loads(canonical(material)):
        return "its stored key differs from the expected one (written for other inputs)"
    fields = stored_header.get("fields")
    return arrays, fields if isinstance(fields, dict) else {}


def save_keyed(root: Path, material: dict[str, Any], arrays: dict[str, np.ndarray], fields: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` (and the JSON-ready ``fields``) under ``material``; return the file. Raises OSError."""
    buffer = io.BytesIO()
    np.savez(buffer, **seal(material, arrays, fields))
    path = keyed_path(root, material)
    write_atomically(path, buffer.getvalue(), mode=FILE_MODE)
    return path


def load_keyed(root: Path, material: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | str | None:
    """Return (arrays, fields) stored under ``material``; None when there is no file; else why it cannot be used."""
    path = keyed_path(root, material)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: np.asarray(stored[name]) for name in stored.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"{path} cannot be read ({type(exc).__name__}: {exc})"
    opened = unseal(material, arrays)
    return f"{path}: {opened}" if isinstance(opened, str) else opened


@contextmanager
def store_warnings(into: list[str]) -> Iterator[None]:
    """Within the block, naa-guard's own warnings (``"naa-guard: ..."``: a stored file ignored, a failed write) go to ``into``.

    So they reach the audit's warnings and reports, not only stderr; other warnings pass through.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        text = str(warning.message)
        if text.startswith("naa-guard: "):
            into.append(text.removeprefix("naa-guard: "))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
