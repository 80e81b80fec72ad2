"""Image folders: every image file under a folder, recursively, with the captions its metadata
files or sidecars hold (:mod:`naa_guard.samples.captions`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from naa_guard.errors import DataError
from naa_guard.samples.captions import folder_captions
from naa_guard.samples.decode import decode_image, stack
from naa_guard.samples.sampleset import Notes
from naa_guard.userfiles import outside

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


class ImageFiles:
    """Image files (a folder's or a manifest's), decoded one by one when read."""

    def __init__(self, entries: list[Entry], size: int, channels: int, role: str, notes: Notes) -> None:
        self.entries, self.size, self.channels, self.role, self.notes = entries, size, channels, role, notes

    def read(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.empty((0, self.channels, self.size, self.size), dtype=np.float32)
        return stack([decode_image(self.entries[row].file, self.size, self.channels, self.role, self.notes) for row in rows])

    def origin(self, row: int) -> str:
        return str(self.entries[row].file)


class Entry(NamedTuple):
    """One image file of a folder or manifest, before decoding."""

    name: str  # relative posix path
    file: Path
    caption: str | None


def list_folder(folder: Path, role: str, notes: Notes, caption_column: str | None, allow_outside: bool = False) -> tuple[list[Entry], tuple[Path, ...]]:
    """Return the image files under `folder`, recursively, sorted by relative posix path, with their
    captions (metadata files, sidecars), and the caption files read.

    An image that is a symlink resolving outside `folder` is an error unless ``allow_outside``
    (``data.allow_outside``, the manifests' rule); one that is not a regular file is skipped, noted."""
    found: list[Entry] = []
    # Hidden entries are skipped: macOS "._x.png" sidecars and ".ipynb_checkpoints" copies
    # carry image suffixes but are not samples. Symlinked folders are not descended (no loops).
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                file = Path(root) / name
                if not file.is_file():  # a named pipe would block the decoder forever
                    notes.skipped.append(file.relative_to(folder).as_posix())
                    continue
                # the walk neither follows linked folders nor yields "..": only a linked file can lead out
                real = outside(file, folder) if not allow_outside and file.is_symlink() else None
                if real is not None:
                    raise DataError(
                        f"Image {file} of the {role} folder {folder} is a link to {real}, outside the folder; an image folder "
                        "may only reach files under itself (as a manifest may only reach files under its own folder). Fix: copy "
                        "the image into the folder, or, if this is intended, set data.allow_outside: true in the policy."
                    )
                found.append(Entry(file.relative_to(folder).as_posix(), file, None))
    if not found:
        raise DataError(
            f"The {role} folder {folder} contains no images (searched recursively, hidden "
            f"files skipped). Expected files ending in {', '.join(IMAGE_EXTENSIONS)} (any "
            "case). Fix: point the source at the folder that holds the images, or convert "
            "them to one of these formats."
        )
    found.sort(key=lambda entry: entry.name)
    captions = folder_captions(folder, [entry.name for entry in found], role, caption_column, allow_outside=allow_outside)
    return [entry._replace(caption=captions.captions[entry.name]) for entry in found], captions.files
