"""Models in the local Hugging Face hub cache: ``model.path: org/name`` read from disk, never the network.

A policy's ``model.path`` (or ``model.config``) written as a Hub repository id (``org/name``, one
slash, no ``./``) that is not a folder beside the policy resolves to a snapshot of
``models--org--name`` in the hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub`` (as ``huggingface_hub`` lays it out). The snapshot is the one
``refs/main`` names (the newest ``main`` that was downloaded), else the only one; several snapshots
and no ``refs/main`` is an error (naa-guard does not guess which one was trained), as is a
repository that is not cached: the message names the cache folder and the command that fills it.
The report records the repository and the snapshot's commit hash (:func:`model_origin`).

The cache is read as huggingface_hub writes it, and nothing else is followed: ``refs/main`` must
hold a commit hash (40 hex digits) naming a snapshot of the same repository, the snapshot must
lie inside the repository's folder (a symlinked snapshot elsewhere, or a ``../`` in refs/main,
would audit another model), and every symlink in it must lead to a file in that folder (its
``blobs/``); a broken one is an interrupted download, and the message says how to finish it.

Only path arithmetic and small reads: no ``huggingface_hub`` import, so policies stay quick to check.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from naa_guard.userfiles import outside, read_regular_text

__all__ = ["REPO_ID", "hub_cache_dir", "model_origin", "resolve_hub_path", "snapshot_of"]

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
COMMIT = re.compile(r"[0-9a-f]{40}")  # a git commit hash, as the Hub names snapshots


def hub_cache_dir() -> Path:
    """Return the hub cache folder huggingface_hub uses in this environment."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ["XDG_CACHE_HOME"]).expanduser() if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def resolve_hub_path(value: Any, base: Path | None, key: str) -> Any:
    """Return ``value`` unchanged, or, for a repository id that is not a local folder, its cached snapshot folder.

    Raises ValueError (a policy error at ``key``) when the repository is not cached or its snapshot is ambiguous.
    """
    if not isinstance(value, str) or not REPO_ID.fullmatch(value.strip()):
        return value
    local = Path(value) if base is None else Path(base) / value
    if local.exists():
        return value  # a folder beside the policy wins over the cache
    repo = value.strip()
    cache = hub_cache_dir()
    folder = cache / f"models--{repo.replace('/', '--')}"
    fill = f"fill it with `hf download {repo}` (huggingface-cli download {repo}) on a machine with access, or set HF_HUB_CACHE / HF_HOME to the cache that holds it"
    snapshots = sorted(p for p in (folder / "snapshots").iterdir() if p.is_dir()) if (folder / "snapshots").is_dir() else []
    if not snapshots:
        raise ValueError(
            f"'{repo}' is not a folder ({local} does not exist) and is not in the local Hugging Face cache: no snapshot under {folder}. "
            f"naa-guard never downloads; {fill}; or point {key} at a local diffusers folder"
        )
    ref = folder / "refs" / "main"
    if ref.exists() or ref.is_symlink():
        commit = read_regular_text(ref, ValueError, "the hub cache's", f"Fix: {fill}.").strip()
        if not COMMIT.fullmatch(commit):
            raise ValueError(
                f"{ref} holds {commit[:80]!r}, not a commit hash (40 hex digits, as huggingface_hub writes it); naa-guard reads "
                f"only the snapshot of '{repo}' that refs/main names by its hash; {fill}"
            )
        if not (folder / "snapshots" / commit).is_dir():
            raise ValueError(f"{ref} names the snapshot {commit}, which is not in {folder / 'snapshots'} (an interrupted download); {fill}")
        snapshot = folder / "snapshots" / commit
    elif len(snapshots) > 1:
        raise ValueError(
            f"the cache {folder} holds {len(snapshots)} snapshots of '{repo}' ({', '.join(p.name[:12] for p in snapshots)}) and no refs/main saying which is current; "
            f"naa-guard does not guess which one was trained. Point {key} at one snapshot folder ({folder / 'snapshots'}/<hash>)"
        )
    else:
        snapshot = snapshots[0]
    check_snapshot(snapshot, folder, repo, fill)
    return str(snapshot)


def check_snapshot(snapshot: Path, folder: Path, repo: str, fill: str) -> None:
    """Return None; raise ValueError when the snapshot lies outside the repository's cache folder, or a link in it is broken or leads out.

    huggingface_hub links each snapshot file to ``../../blobs/<hash>`` of the same repository;
    a link elsewhere is not the cache's, and a broken one is an interrupted download.
    """
    home = folder.resolve()
    real = outside(snapshot, home)
    if real is not None:
        raise ValueError(f"the snapshot {snapshot} of '{repo}' resolves to {real}, outside the repository's cache folder {folder}: it is another model's files; {fill}")
    for root, dirs, files in os.walk(snapshot):
        for name in sorted([*dirs, *files]):
            entry = Path(root) / name
            if not entry.is_symlink():
                continue
            if not entry.exists():
                raise ValueError(
                    f"{entry} is a broken link (to {os.readlink(entry)}): the download of '{repo}' did not finish, so this snapshot lacks a file; "
                    f"{fill}"
                )
            real = outside(entry, home)
            if real is not None:
                raise ValueError(f"{entry} links to {real}, outside the cache folder {folder} of '{repo}'; a snapshot's files link to its own blobs/; {fill}")


def snapshot_of(path: Path | None) -> tuple[str, str] | None:
    """Return (repository id, commit hash) when ``path`` is (inside) a hub cache snapshot, else None."""
    if path is None:
        return None
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--"):
            return parts[i - 1].removeprefix("models--").replace("--", "/"), parts[i + 1]
    return None


def model_origin(model: Any) -> dict[str, str]:
    """Return the report's record of hub cache snapshots the policy's model keys resolved to ({} when none)."""
    found = {}
    for key in ("path", "config"):
        snapshot = snapshot_of(getattr(model, key, None))
        if snapshot is not None:
            found[f"model_{key}_snapshot"] = f"{snapshot[0]}@{snapshot[1]}"
    return found
