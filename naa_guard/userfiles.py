"""Files a user points naa-guard at are read only when they are regular files, and stay inside their roots.

A named pipe blocks its reader until something writes to it, a character device such as
``/dev/zero`` never ends, and a socket cannot be read as a file: a path that names one of them,
directly or through a symlink, is refused with an error naming it, never opened.
:func:`open_regular` is the one way naa-guard opens such a file itself: the path is checked
with ``stat`` first, then opened without blocking and checked again on the open descriptor (the
path may have been replaced in between), so no open can hang. :func:`entry_problem` says what is
wrong with a path before a library opens it by name.

:func:`outside` is the containment rule of image folders and manifests: a file reached through
a symlink (or ``..``) that resolves outside its root is refused unless ``data.allow_outside``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["entry_problem", "first_unreadable", "non_regular_kind", "open_regular", "outside", "read_regular_text"]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def non_regular_kind(path: Path | str) -> str | None:
    """Return what ``path`` (symlinks followed) is when it exists and is not a regular file ("a named pipe", ...), else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None  # missing (or a broken link): the caller's own "no such file" check reports it
    return _kind(mode)


def entry_problem(path: Path | str) -> str | None:
    """Return why a file a library will open by name cannot be read safely (a pipe, a device, a broken link), else None."""
    kind = non_regular_kind(path)
    if kind is not None and kind != "a folder":
        return f"is {kind}, not a regular file; reading it could block forever or never end"
    if os.path.islink(path) and not os.path.exists(path):
        return f"is a broken link (to {os.readlink(path)}): the file it points to is missing"
    return None


def first_unreadable(root: Path, depth: int | None = None) -> tuple[Path, str] | None:
    """Return the first file under the folder ``root`` that :func:`entry_problem` refuses, with why; None when there is none.

    Hidden entries are skipped (no loader reads them); linked subfolders are followed, each real
    folder once; ``depth`` levels at most (1: ``root``'s own files; None: every level).
    """
    seen: set[Path] = set()
    pending = [(Path(root), 1)]
    while pending:
        folder, level = pending.pop(0)
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if depth is None or level < depth:
                    pending.append((entry, level + 1))
                continue
            problem = entry_problem(entry)
            if problem is not None:
                return entry, problem
    return None


def open_regular(path: Path | str, error: type[Exception], what: str, fix: str) -> BinaryIO:
    """Return ``path`` opened for binary reading; raise ``error`` when it is not a regular file or cannot be opened.

    ``what`` names the file in the message (e.g. "the members metadata file"), ``fix`` ends it.
    A pipe or device is never opened in blocking mode, so this call cannot hang.
    """
    kind = non_regular_kind(path)
    if kind is not None:
        raise error(f"{what} {path} is {kind}, not a regular file; naa-guard never opens one (a pipe or device could block forever). {fix}")
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise error(f"Cannot read {what} {path} ({exc.strerror or exc}). {fix}") from None
    try:
        kind = _kind(os.fstat(fd).st_mode)  # the path may have been swapped for a pipe since the stat
        if kind is not None:
            raise error(f"{what} {path} is {kind}, not a regular file; naa-guard never opens one (a pipe or device could block forever). {fix}")
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_text(path: Path | str, error: type[Exception], what: str, fix: str, encoding: str = "utf-8") -> str:
    """Return the text of the regular file ``path``; raise ``error`` for a pipe, device, unreadable or undecodable file."""
    with open_regular(path, error, what, fix) as handle:
        try:
            return handle.read().decode(encoding)
        except OSError as exc:
            raise error(f"Cannot read {what} {path} ({exc.strerror or exc}). {fix}") from None
        except UnicodeDecodeError as exc:
            raise error(f"Cannot read {what} {path} ({exc}). {fix}") from None


def outside(file: Path, root: Path) -> Path | None:
    """Return where ``file`` really is (symlinks and ``..`` resolved) when that is outside ``root``, else None."""
    real = Path(file).resolve()
    return None if real.is_relative_to(Path(root).resolve()) else real
