"""Captions where trainers keep them: manifest columns, imagefolder metadata files and sidecar files.

A text-to-image model is audited with the caption each image was trained with (SPEC section 3),
so every place a training script reads captions from is read here:

- a ``.csv`` / ``.jsonl`` manifest's caption column (see :mod:`naa_guard.samples.manifest`);
- an image folder in the Hugging Face / diffusers *imagefolder* layout: a ``metadata.jsonl`` or
  ``metadata.csv`` in the folder or any subfolder, whose ``file_name`` is relative to the folder
  holding the metadata file (subpaths allowed) and whose caption column is ``text`` or
  ``caption`` (``data.caption_column`` names another);
- a caption sidecar beside an image, as kohya-ss trainers read them: ``0001.png`` with
  ``0001.txt`` or ``0001.caption``.

One rule in every source: a blank caption (nothing left once whitespace and invisible format /
control characters are removed, :func:`naa_guard.blanktext.is_blank`) is a missing caption; a
caption stored as a list (a JSON array, a dataset's list column) is its first entry, as diffusers'
train_text_to_image takes it outside training (:func:`caption_value`). Anything that
leaves naa-guard unsure which caption an image was trained with is a DataError, never a guess:
both ``caption`` and ``text`` columns without ``data.caption_column``; a folder with a metadata
file whose rows leave an image out, or name a file that is not one of its images, or name one
twice; ``metadata.jsonl`` beside ``metadata.csv``; two sidecars (``.txt`` and ``.caption``) of
one image that disagree; a sidecar with several non-blank lines (kohya-ss reads the first line,
other trainers the whole file); a metadata caption and a sidecar of one image that disagree (a
metadata file without a caption column leaves the sidecars to decide).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naa_guard.blanktext import is_blank
from naa_guard.errors import DataError
from naa_guard.userfiles import non_regular_kind, outside, read_regular_text

__all__ = ["CAPTION_COLUMNS", "METADATA_NAMES", "SIDECAR_SUFFIXES", "FolderCaptions", "caption_column", "caption_value", "clean_caption", "folder_captions"]

CAPTION_COLUMNS: tuple[str, ...] = ("caption", "text", "txt", "prompt")  # recognised without data.caption_column (img2dataset, LAION, diffusers)
METADATA_NAMES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv")
SIDECAR_SUFFIXES: tuple[str, ...] = (".txt", ".caption")
_EXAMPLES = 5


def clean_caption(value: str | None) -> str | None:
    """Return the caption, or None when it is missing or blank (is_blank: one rule for every source)."""
    return None if is_blank(value) else value


def caption_value(value: object, where: str) -> str | None:
    """Return the caption a stored value holds: a string, or a list's first entry; None when missing or blank.

    A list is the several captions of one image (COCO-style); diffusers' train_text_to_image trains
    on a random one and evaluates on the first, so the first is the one naa-guard queries with. An
    empty list is a missing caption; a list whose first entry is not a string, or any other type,
    is an error (``where`` names the row and column).
    """
    if isinstance(value, list | tuple):
        if not value:
            return None
        first = value[0]
        if not isinstance(first, str) and first is not None:
            raise DataError(
                f"{where} is a list whose first entry is of type {type(first).__name__}; a list of captions is read by its first "
                "entry, which must be a string. Fix: store the captions as strings (the one the model was trained with first)."
            )
        return clean_caption(first)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where} is of type {type(value).__name__}; expected a string (or a list of strings, read by its first entry). Fix: quote the caption.")
    return clean_caption(value)


def caption_column(columns: Iterable[str], chosen: str | None, where: str) -> str | None:
    """Return the column that holds the captions among ``columns``: ``chosen``, else the one of caption / text / txt / prompt; None if none.

    ``where`` names the file for the messages. A chosen column that is absent is an error (a typo
    would otherwise audit caption-free), and so are two of the usual names without a choice.
    """
    present = set(columns)
    if chosen is not None:
        if chosen not in present:
            raise DataError(
                f"{where} has no '{chosen}' column (data.caption_column); its columns are {', '.join(sorted(present)) or 'none'}. "
                "Fix: set data.caption_column in the policy to the column your training script read captions from."
            )
        return chosen
    found = [column for column in CAPTION_COLUMNS if column in present]
    if len(found) > 1:
        raise DataError(
            f"{where} has {'both ' if len(found) == 2 else ''}{' and '.join(f'a {name!r}' for name in found)} column; naa-guard cannot tell which one the model was trained with. "
            "Fix: set data.caption_column in the policy to the column your training script read (diffusers' --caption_column)."
        )
    return found[0] if found else None


@dataclass(frozen=True)
class FolderCaptions:
    """An image folder's captions, by image name (relative posix path), and the files they came from."""

    captions: dict[str, str | None]
    files: tuple[Path, ...]  # metadata files and sidecars read: their content shapes the scores


_NO_COLUMN = object()  # a metadata row of a file without a caption column: the sidecars decide


def folder_captions(folder: Path, names: Sequence[str], role: str, column: str | None = None, *, allow_outside: bool = False) -> FolderCaptions:
    """Return the caption of each image ``names`` (relative to ``folder``) from its metadata files and sidecars.

    A metadata file or sidecar that is a pipe or device is an error (never opened), and so is one
    that is a symlink resolving outside ``folder`` unless ``allow_outside`` (``data.allow_outside``).
    """
    listed = set(names)
    metadata, files = _read_metadata(folder, listed, role, column, allow_outside)
    if metadata:
        unlisted = [name for name in names if name not in metadata]
        if unlisted:
            shown = ", ".join(unlisted[:_EXAMPLES]) + (f" and {len(unlisted) - _EXAMPLES} more" if len(unlisted) > _EXAMPLES else "")
            raise DataError(
                f"The {role} folder {folder} has a metadata file, but {len(unlisted)} of its {len(names)} images have no row in any "
                f"metadata file ({shown}). Their captions are unknown, and a training script reading this folder would not have "
                "listed them either. Fix: add a row (file_name and caption) for each, or move them out of the folder."
            )
    captions: dict[str, str | None] = {}
    for name in names:
        sidecar, sidecar_files = _read_sidecars(folder, name, role, allow_outside)
        files += sidecar_files
        from_metadata = metadata.get(name, _NO_COLUMN)
        if from_metadata is _NO_COLUMN:
            captions[name] = sidecar
        elif sidecar_files and from_metadata != sidecar:
            raise DataError(
                f"Image {name} of the {role} folder {folder} has the caption {from_metadata!r} in its metadata file but "
                f"{sidecar!r} in {sidecar_files[0].name}; naa-guard cannot tell which one the model was trained with. "
                "Fix: keep one source of captions (delete the sidecars or the metadata file's caption column), or make them agree."
            )
        else:
            captions[name] = from_metadata  # type: ignore[assignment]
    return FolderCaptions(captions, tuple(files))


def check_caption_file(file: Path, folder: Path, role: str, what: str, allow_outside: bool) -> None:
    """Return None; raise DataError when a caption file of an image folder is a pipe or device, or leads outside the folder."""
    kind = non_regular_kind(file)
    if kind is not None:
        raise DataError(
            f"The {what} {file} of the {role} folder {folder} is {kind}, not a regular file; naa-guard never opens one "
            "(a pipe or device could block forever). Fix: replace it with a regular text file, or delete it."
        )
    real = outside(file, folder) if not allow_outside and file.is_symlink() else None  # the walk follows no linked folder
    if real is not None:
        raise DataError(
            f"The {what} {file} of the {role} folder {folder} resolves to {real}, outside the folder; an image folder may only "
            "read files under itself. Fix: copy the file into the folder, or, if this is intended, set data.allow_outside: true in the policy."
        )


def _metadata_files(folder: Path, role: str) -> list[Path]:
    """Return every metadata file under ``folder`` (hidden folders skipped), at most one form per folder."""
    found: list[Path] = []
    for root, dirs, file_names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        here = [Path(root) / name for name in METADATA_NAMES if name in file_names]
        if len(here) > 1:
            raise DataError(
                f"The {role} folder {Path(root)} holds both metadata.jsonl and metadata.csv; naa-guard cannot tell which "
                "one the training script read. Fix: keep one of them."
            )
        found += here
    return found


def _read_metadata(folder: Path, listed: set[str], role: str, column: str | None, allow_outside: bool = False) -> tuple[dict[str, object], list[Path]]:
    """Return each image's metadata caption (or _NO_COLUMN) by name, and the metadata files read."""
    captions: dict[str, object] = {}
    where_named: dict[str, str] = {}
    files = _metadata_files(folder, role)
    for metadata in files:
        check_caption_file(metadata, folder, role, "metadata file", allow_outside)
        for line, raw, caption in _metadata_rows(metadata, role, column):
            where = f"Line {line} of {metadata}"
            if not raw:
                raise DataError(f"{where} has an empty 'file_name'. Fix: give the image's path relative to {metadata.parent}.")
            target = Path(os.path.normpath(metadata.parent / raw))
            name = Path(os.path.relpath(target, folder)).as_posix()
            if name not in listed:
                state = "no file exists there" if not target.exists() else "it is not one of the folder's images (not an image file, hidden, or outside the folder)"
                raise DataError(
                    f"{where} names '{raw}' ({target}), but {state}: a caption for an image the audit cannot see. "
                    f"Fix: correct the file_name (relative to {metadata.parent}), restore the image, or delete the row."
                )
            if name in captions:
                raise DataError(f"{where} names '{raw}', the image already named by {where_named[name][0].lower()}{where_named[name][1:]}. Fix: keep one row per image.")
            captions[name], where_named[name] = caption, where
    return captions, files


def _metadata_rows(metadata: Path, role: str, column: str | None) -> list[tuple[int, str, object]]:
    """Return (line, file_name, caption or _NO_COLUMN) for each row of a metadata.jsonl / metadata.csv."""
    text = read_regular_text(metadata, DataError, f"the {role} metadata file", "Fix: make it a readable UTF-8 text file.", "utf-8-sig")
    records = _csv_records(text, metadata) if metadata.suffix == ".csv" else _jsonl_records(text, metadata)
    keys = {key for _, record in records for key in record}
    chosen = caption_column(keys, column, f"The {role} metadata file {metadata}")
    rows: list[tuple[int, str, object]] = []
    for line, record in records:
        raw = record.get("file_name")
        if not isinstance(raw, str):
            raise DataError(f"Line {line} of {metadata} has no string 'file_name'. Fix: give each row the image's path under \"file_name\".")
        value = record.get(chosen) if chosen is not None else None
        rows.append((line, raw.strip(), caption_value(value, f"The '{chosen}' of line {line} of {metadata}") if chosen is not None else _NO_COLUMN))
    return rows


def _csv_records(text: str, metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if "file_name" not in reader.fieldnames:
            raise DataError(f"{metadata} has no 'file_name' column (header: {', '.join(reader.fieldnames) or 'empty'}). Fix: name the image column file_name, as the imagefolder layout does.")
        return [(reader.line_num, dict(record)) for record in reader]
    except csv.Error as exc:
        raise DataError(f"Line {reader.line_num} of {metadata} is not valid CSV ({exc}). Fix: correct that line.") from exc


def _jsonl_records(text: str, metadata: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"Line {number} of {metadata} is not valid JSON ({exc.msg}). Fix: write one JSON object per line, e.g. {{\"file_name\": \"0001.png\", \"text\": \"a cat\"}}.") from exc
        if not isinstance(record, dict):
            raise DataError(f"Line {number} of {metadata} is {line.strip()[:80]!r}; expected a JSON object. Fix: write one object per line.")
        records.append((number, record))
    return records


def _read_sidecars(folder: Path, name: str, role: str, allow_outside: bool = False) -> tuple[str | None, list[Path]]:
    """Return the caption of the image's sidecar files (None when absent or blank) and the files read."""
    image = folder / name
    found: list[tuple[Path, str | None]] = []
    for suffix in SIDECAR_SUFFIXES:
        sidecar = image.with_suffix(suffix)
        if sidecar.exists() and not sidecar.is_dir():  # a pipe or device named like a sidecar is an error, not a missing caption
            check_caption_file(sidecar, folder, role, "caption sidecar", allow_outside)
            found.append((sidecar, _sidecar_caption(sidecar, role)))
    if len({caption for _, caption in found}) > 1:
        raise DataError(
            f"Image {image} of the {role} set has two caption sidecars that disagree: {found[0][0].name} says {found[0][1]!r}, "
            f"{found[1][0].name} says {found[1][1]!r}. Fix: keep the one your trainer read (its caption extension) and delete the other."
        )
    return (found[0][1] if found else None), [file for file, _ in found]


def _sidecar_caption(sidecar: Path, role: str) -> str | None:
    text = read_regular_text(sidecar, DataError, f"the caption sidecar of the {role} set", "Fix: make it a readable UTF-8 text file.", "utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        raise DataError(
            f"The caption sidecar {sidecar} ({role} set) has {len(lines)} non-blank lines; kohya-ss trainers read only the first, "
            "others the whole file, so the trained caption is ambiguous. Fix: put the caption on one line."
        )
    return clean_caption(text.strip())
