"""Manifests: a ``.csv`` / ``.jsonl`` file listing image paths (relative to its folder) and,
optionally, captions.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from naa_guard.errors import DataError
from naa_guard.samples.captions import caption_column, caption_value, clean_caption
from naa_guard.samples.folder import Entry
from naa_guard.userfiles import read_regular_text

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl")


_Row = tuple[int, str, str | None]  # a manifest row: (line number, path as written, caption)


def list_manifest(manifest: Path, role: str, allow_outside: bool, column: str | None) -> list[Entry]:
    """Return the rows of a .csv / .jsonl manifest, each file checked to exist."""
    # -sig: spreadsheet exports add a BOM; a pipe or device is refused, never opened
    text = read_regular_text(manifest, DataError, f"the {role} manifest", "Fix: make it a readable UTF-8 text file.", "utf-8-sig")
    csv_form = manifest.suffix.lower() == ".csv"
    rows = _parse_csv(text, manifest, role, column) if csv_form else _parse_jsonl(text, manifest, role, column)
    if not rows:
        raise DataError(
            f"The {role} manifest {manifest} lists no samples. "
            "Fix: add one row per image with at least a 'path' value."
        )
    # Every row is checked (a cheap stat) so that errors do not depend on the seed.
    return [_resolve_row(manifest, row, role, allow_outside) for row in rows]


def _parse_csv(text: str, manifest: Path, role: str, column: str | None) -> list[_Row]:
    """Return (line, path, caption) for each data row of a CSV manifest with a header."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[_Row] = []
    try:
        header = reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if "path" not in header:
            raise DataError(
                f"The {role} manifest {manifest} has no 'path' column (line 1 header: "
                f"{', '.join(header) or 'empty'}). Fix: add a header line whose columns "
                "include 'path' (and optionally 'caption'), one image per row."
            )
        chosen = caption_column(header, column, f"The {role} manifest {manifest}")
        for record in reader:
            path = (record.get("path") or "").strip()
            rows.append((reader.line_num, path, clean_caption(record.get(chosen)) if chosen else None))
    except csv.Error as exc:
        raise DataError(
            f"Line {reader.line_num} of the {role} manifest {manifest} is not valid CSV ({exc}). "
            "Fix: correct that line (quote fields that hold commas or newlines)."
        ) from exc
    return rows


def _parse_jsonl(text: str, manifest: Path, role: str, column: str | None) -> list[_Row]:
    """Return (line, path, caption) for each non-blank line of a JSON-lines manifest."""
    records: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) carry no sample
        where = f"Line {number} of the {role} manifest {manifest}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno}). Fix: write one "
                'JSON object per line, e.g. {"path": "img/0001.png", "caption": "a cat"}.'
            ) from exc
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise DataError(
                f"{where} is {line.strip()[:80]!r}; expected a JSON object with a string "
                "'path' key. Fix: add the image path under \"path\" on that line."
            )
        records.append((number, record))
    chosen = caption_column({key for _, record in records for key in record}, column, f"The {role} manifest {manifest}")
    rows: list[_Row] = []
    for number, record in records:
        caption = caption_value(record.get(chosen), f"The caption '{chosen}' of line {number} of the {role} manifest {manifest}") if chosen else None
        rows.append((number, str(record["path"]).strip(), caption))
    return rows


def _resolve_row(manifest: Path, row: _Row, role: str, allow_outside: bool) -> Entry:
    """Return the entry for a manifest row, its file checked to exist (and to stay inside)."""
    line, raw, caption = row
    where = f"Line {line} of the {role} manifest {manifest}"
    if not raw:
        raise DataError(f"{where} has an empty 'path'. Fix: give the image path on that line.")
    file = Path(os.path.normpath(manifest.parent / raw))
    root = manifest.parent.resolve()
    # resolve() follows symlinks, so a link inside the folder cannot reach outside it either.
    if not allow_outside and not file.resolve().is_relative_to(root):
        raise DataError(
            f"{where} points to '{raw}', which resolves to {file.resolve()}, outside the "
            f"manifest's folder {root}; a manifest may only reach files under its own folder. "
            "Fix: move the images under that folder (or the manifest above them), or, if this is "
            "intended, set data.allow_outside: true in the policy."
        )
    if file.exists() and not file.is_file():
        raise DataError(
            f"{where} points to '{raw}', which is not a regular file ({file}: a folder, pipe or device). "
            "Fix: list image files only."
        )
    if not file.is_file():
        raise DataError(
            f"{where} points to '{raw}', but no file exists at {file} (paths are relative to "
            "the manifest's folder). Fix: correct the path or restore the file."
        )
    return Entry(Path(os.path.relpath(file, manifest.parent)).as_posix(), file, caption)
