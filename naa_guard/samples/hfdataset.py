"""Hugging Face ``datasets`` as sample sets: parquet shards and ``save_to_disk`` folders, read from local files only.

Three shapes are recognised as a dataset (an *imagefolder* with ``metadata.jsonl`` is an image
folder, see :mod:`naa_guard.samples.captions`):

- a ``.parquet`` file, as ``Dataset.to_parquet`` writes it (an image struct with the PNG / JPEG
  bytes, the features in the schema's ``huggingface`` metadata);
- a folder of parquet shards, as the Hub stores a dataset (``data/train-00000-of-00002.parquet``):
  a file's split is its name up to the first ``-`` (or its subfolder's name outside ``data/``);
- a ``save_to_disk`` folder: one split (``state.json``) or several (``dataset_dict.json``).

A split is chosen with ``data.split`` (a name, or one per side: ``{members: train, nonmembers:
test}``); a source with one split needs none, several without a choice is an error. The image
column is ``data.image_column``, else the one ``Image`` feature, else the one column of encoded
image bytes (a ``{bytes, path}`` struct or a binary column, as parquet written without the
Hugging Face metadata holds them); the caption column is ``data.caption_column``, else
``caption`` or ``text`` (both is an error), a blank caption being a missing one as in every source
and a list of captions read by its first entry (a candidate column of another type is skipped, and
the report says why). Only the caption column is read when listing; images are decoded
chunk by chunk (a parquet row group or the memory-mapped arrow rows a chunk needs), through the
same preprocessing as image files, so the same image gives the same bytes as in a folder. Rows
that hold only a path (no embedded bytes) are an error: the audit reads what the dataset holds.
``datasets`` comes with the ``naa-guard[datasets]`` extra.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.errors import DataError
from naa_guard.samples.captions import CAPTION_COLUMNS, caption_column, caption_value
from naa_guard.samples.decode import decode_bytes, stack
from naa_guard.samples.folder import IMAGE_EXTENSIONS
from naa_guard.samples.sampleset import Notes, SampleSet, choose
from naa_guard.userfiles import first_unreadable

__all__ = ["DATASET_HINT", "hub_name_hint", "is_dataset", "list_dataset"]

DATASET_HINT = 'pip install "naa-guard[datasets]"'
_SAVED = ("dataset_dict.json", "state.json")
_HUB_NAME = re.compile(r"(hf://datasets/)?[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_dataset(path: Path) -> bool:
    """Return True when ``path`` is a parquet file, a save_to_disk folder or a folder of parquet shards (and no images)."""
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in _SAVED):
        return True
    shards = _parquet_files(path)
    return bool(shards) and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*") if not _hidden(p, path))


def hub_name_hint(path: Path, written: str | None = None) -> str:
    """Return a sentence for a missing source that looks like a Hub dataset name (org/name), else ''."""
    text = written if written is not None else "/".join(path.parts[-2:])
    if path.suffix or not _HUB_NAME.fullmatch(text.removeprefix("hf://datasets/") if text.startswith("hf://") else text):
        return ""
    name = text.removeprefix("hf://datasets/")
    return (
        f" If '{name}' is a Hugging Face Hub dataset, naa-guard reads local files only and never downloads: fetch it first "
        f"(huggingface-cli download --repo-type dataset {name} --local-dir DIR, or datasets.load_dataset('{name}').save_to_disk(DIR)) "
        "and point the key at DIR."
    )


def list_dataset(
    path: Path, *, size: int, channels: int, limit: int | None, seed: int, role: str, notes: Notes,
    split: str | None, image_column: str | None, caption_name: str | None,
) -> SampleSet:  # fmt: skip
    """Return the chosen split of a local dataset as a sample set, captions read, images not yet decoded."""
    _import_datasets(role)
    found = first_unreadable(path) if path.is_dir() else None
    if found is not None:  # datasets and pyarrow open files by name: a pipe would block them forever
        raise DataError(f"The {role} dataset {path} holds {found[0]}, which {found[1]}. Fix: replace it with the regular file, or remove it.")
    chosen_split, table = _open_split(path, split, role)
    columns = _columns(table, image_column, caption_name, f"Split '{chosen_split}' of the {role} dataset {path}")
    image, caption = columns.image, columns.caption
    indices = choose(table.num_rows, limit, seed)
    if not len(indices):
        raise DataError(f"Split '{chosen_split}' of the {role} dataset {path} has no rows. Fix: point data.{role} at a split that holds the images.")
    where = f"split '{chosen_split}' of the {role} dataset {path}"
    captions = tuple(caption_value(value, f"The caption '{caption}' of row {row} of {where}") for value, row in zip(table.read(indices, caption), indices, strict=True)) if caption else (None,) * len(indices)
    reader = _DatasetReader(table, chosen_split, image, size, channels, role, notes, path)
    log = _DatasetNotes(notes, f"the {role} set is {where} ({table.num_rows} rows; images from column '{image}'{columns.image_note}, captions from {repr(caption) if caption else 'no column'}{columns.caption_note})")
    reader.notes = log
    return SampleSet(reader, indices, tuple(f"{chosen_split}[{i}]" for i in indices), indices, captions, path, table.files, log)


class _DatasetNotes(Notes):
    """A set's preprocessing notes, headed by where its rows come from (the split)."""

    def __init__(self, notes: Notes, origin: str) -> None:
        super().__init__(notes.role, notes.size, notes.fit)
        self.origin = origin

    def lines(self, total: int) -> tuple[str, ...]:
        return (self.origin, *super().lines(total))


def _import_datasets(role: str) -> Any:
    try:
        import datasets
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise DataError(f"The {role} source is a Hugging Face dataset, which needs the datasets package ({exc}). Fix: {DATASET_HINT}.") from None
    return datasets


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _parquet_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*.parquet") if p.is_file() and not _hidden(p, folder)), key=lambda p: p.as_posix())


def _shard_split(file: Path, folder: Path) -> str:
    parent = file.parent.relative_to(folder).parts
    if parent and parent[-1] != "data":
        return parent[-1]
    return file.stem.split("-")[0]


def _open_split(path: Path, split: str | None, role: str) -> tuple[str, _Table]:
    """Return the chosen split's name and table."""
    if path.is_file():
        if split is not None and split != path.stem.split("-")[0]:
            raise DataError(f"data.split asks the {role} set for split '{split}', but {path} is a single parquet file (split '{path.stem.split('-')[0]}'). Fix: remove data.split for this side, or point data.{role} at the file or folder of that split.")
        return path.stem.split("-")[0], _ParquetTable([path], role)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        splits = _saved_splits(path, role)
        name = _pick(splits, split, path, role)
        return name, _ArrowTable(path / name if name in splits and (path / "dataset_dict.json").is_file() else path, role)
    shards: dict[str, list[Path]] = {}
    for file in _parquet_files(path):
        shards.setdefault(_shard_split(file, path), []).append(file)
    name = _pick(list(shards), split, path, role)
    return name, _ParquetTable(shards[name], role)


def _saved_splits(path: Path, role: str) -> list[str]:
    if not (path / "dataset_dict.json").is_file():
        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError(f"it holds a JSON {type(state).__name__}, not an object")
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DataError(
                f"Cannot read {path / 'state.json'} for the {role} set ({type(exc).__name__}: {exc}); the file is truncated or damaged. "
                "Fix: save the dataset again with save_to_disk (or copy the folder again)."
            ) from None
        return [str(state.get("_split") or "train")]
    try:
        splits = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"Cannot read {path / 'dataset_dict.json'} ({exc}) for the {role} set. Fix: save the dataset again with save_to_disk.") from None
    return [str(s) for s in splits]


def _pick(splits: list[str], split: str | None, path: Path, role: str) -> str:
    if split is not None:
        if split not in splits:
            raise DataError(f"The {role} dataset {path} has no split '{split}' (data.split); its splits are {', '.join(splits)}. Fix: set data.split to one of them.")
        return split
    if len(splits) != 1:
        raise DataError(
            f"The {role} dataset {path} has {len(splits)} splits ({', '.join(splits)}) and data.split does not say which one the {role} are. "
            f"Fix: set data.split, e.g. {{members: train, nonmembers: test}}."
        )
    return splits[0]


class _Table:
    """One split's rows: their count, features and files; columns read at given rows."""

    num_rows: int
    files: tuple[Path, ...]
    features: Mapping[str, Any]

    def read(self, rows: np.ndarray, column: str) -> list[Any]:
        raise NotImplementedError


class _ParquetTable(_Table):
    """Parquet shards of one split, read a row group at a time."""

    def __init__(self, files: list[Path], role: str) -> None:
        import datasets
        import pyarrow.parquet as pq

        self.files, self.role = tuple(files), role
        self.groups: list[tuple[Path, int, int]] = []  # (file, row group, first row)
        schema, first = None, 0
        for file in files:
            try:
                meta = pq.ParquetFile(file).metadata
                file_schema = pq.read_schema(file)
            except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
                raise DataError(f"Cannot read the parquet file {file} for the {role} set ({type(exc).__name__}: {exc}). Fix: write it again (Dataset.to_parquet).") from None
            if schema is not None and not file_schema.remove_metadata().equals(schema.remove_metadata()):
                raise DataError(f"The parquet shards of the {role} set disagree on their columns: {file} has {file_schema.names}, {files[0]} has {schema.names}. Fix: keep the shards of one dataset together.")
            schema = file_schema
            for group in range(meta.num_row_groups):
                self.groups.append((file, group, first))
                first += meta.row_group(group).num_rows
        self.num_rows = first
        self.features = datasets.Features.from_arrow_schema(schema)
        self.starts = np.array([start for _, _, start in self.groups] + [first], dtype=np.int64)

    def read(self, rows: np.ndarray, column: str) -> list[Any]:
        import pyarrow.parquet as pq

        values: list[Any] = [None] * len(rows)
        where = np.searchsorted(self.starts, rows, side="right") - 1
        for group in np.unique(where):
            file, index, start = self.groups[int(group)]
            data = pq.ParquetFile(file).read_row_group(index, columns=[column]).column(column)
            for position in np.flatnonzero(where == group):
                values[position] = data[int(rows[position] - start)].as_py()
        return values


class _ArrowTable(_Table):
    """A save_to_disk split, memory-mapped by datasets (reopened in each process)."""

    def __init__(self, folder: Path, role: str) -> None:
        self.folder, self.role = folder, role
        dataset = self._open()
        self.num_rows, self.features = dataset.num_rows, dataset.features
        self.files = tuple(sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".arrow" or p.name in ("state.json", "dataset_info.json"))))

    def _open(self) -> Any:
        import datasets

        if getattr(self, "_dataset", None) is None:
            try:
                self._dataset = datasets.load_from_disk(str(self.folder)).with_format("arrow")
            except Exception as exc:  # datasets raises FileNotFoundError, ValueError, ArrowInvalid, ...
                raise DataError(f"Cannot open the {self.role} dataset {self.folder} ({type(exc).__name__}: {exc}). Fix: save it again with save_to_disk.") from None
        return self._dataset

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def read(self, rows: np.ndarray, column: str) -> list[Any]:
        return self._open().select_columns([column])[[int(row) for row in rows]].column(column).to_pylist()


@dataclass(frozen=True)
class _Columns:
    """The image and caption columns of a split, and what the reports say about them."""

    image: str
    caption: str | None
    image_note: str = ""
    caption_note: str = ""


def _is_text(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_text_list(feature: Any) -> bool:
    """Return True for a list of texts (several captions per image): datasets' List / Sequence / LargeList, or [Value]."""
    import datasets

    if isinstance(feature, list):
        return len(feature) == 1 and _is_text(feature[0])
    kinds = tuple(kind for kind in (getattr(datasets, name, None) for name in ("List", "LargeList", "Sequence")) if isinstance(kind, type))
    return isinstance(feature, kinds) and _is_text(getattr(feature, "feature", None))


def _is_encoded_image(feature: Any) -> bool:
    """Return True for encoded image bytes without an Image feature: a {bytes[, path]} struct or a binary column."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("binary", "large_binary")
    if isinstance(feature, dict) and "bytes" in feature and set(feature) <= {"bytes", "path"}:
        return _is_encoded_image(feature["bytes"]) and ("path" not in feature or _is_text(feature["path"]))
    return False


def _image_column(features: Mapping[str, Any], image: str | None, where: str) -> tuple[str, str]:
    """Return the image column and a note for the reports ('' for an Image feature)."""
    import datasets

    raw = " (encoded image bytes without an Image feature, decoded as image files)"
    if image is not None:
        if image not in features:
            raise DataError(f"{where} has no column '{image}' (data.image_column); its columns are {', '.join(features)}. Fix: set data.image_column to the column holding the images.")
        if isinstance(features[image], datasets.Image):
            return image, ""
        if _is_encoded_image(features[image]):
            return image, raw
        raise DataError(
            f"{where}: column '{image}' (data.image_column) is {features[image]!r}: neither an Image feature nor encoded image bytes "
            "(a {bytes, path} struct or a binary column). Fix: name the column that holds the images."
        )
    found = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if len(found) == 1:
        return found[0], ""
    if found:
        raise DataError(f"{where} has {len(found)} image columns ({', '.join(found)}); naa-guard cannot tell which one holds the trained images. Fix: set data.image_column in the policy.")
    encoded = [name for name, feature in features.items() if _is_encoded_image(feature)]
    if len(encoded) == 1:
        return encoded[0], raw
    state = f"{len(encoded)} columns of encoded image bytes ({', '.join(encoded)}) and no Image feature" if encoded else f"no Image feature and no column of image bytes among its columns ({', '.join(features)})"
    raise DataError(f"{where} has {state}; naa-guard cannot tell which one holds the trained images. Fix: set data.image_column in the policy to the column that holds them.")


def _columns(table: _Table, image: str | None, caption: str | None, where: str) -> _Columns:
    """Return the image column and the caption column (None when there is none), with their notes."""
    features = table.features
    image, image_note = _image_column(features, image, where)
    texts = [name for name, feature in features.items() if _is_text(feature) or _is_text_list(feature)]
    if caption is not None and caption in features and caption not in texts:
        raise DataError(f"{where}: column '{caption}' (data.caption_column) is {features[caption]!r}, not text (nor a list of texts). Fix: name the column that holds the captions.")
    chosen = caption_column(texts if caption is None else list(features), caption, where)
    notes = []
    if chosen is not None and _is_text_list(features[chosen]):
        notes.append("; each row holds a list of captions: the first is used, as diffusers' train_text_to_image does outside training")
    skipped = [name for name in CAPTION_COLUMNS if caption is None and name in features and name not in texts]
    notes += [f"; column '{name}' skipped as a caption column: it is {features[name]!r}, neither text nor a list of texts" for name in skipped]
    return _Columns(image, chosen, image_note, "".join(notes))


class _DatasetReader:
    """Decodes a dataset split's images at given rows, through the same preprocessing as image files."""

    notes: Notes

    def __init__(self, table: _Table, split: str, column: str, size: int, channels: int, role: str, notes: Notes, source: Path) -> None:
        self.table, self.split, self.column, self.size, self.channels, self.role, self.notes, self.source = table, split, column, size, channels, role, notes, source

    def read(self, rows: np.ndarray) -> np.ndarray:
        if not len(rows):
            return np.empty((0, self.channels, self.size, self.size), dtype=np.float32)
        return stack([self._decode(value, int(row)) for value, row in zip(self.table.read(rows, self.column), rows, strict=True)])

    def origin(self, row: int) -> str:
        return f"{self.source}:{self.split}[{row}]"

    def _decode(self, value: Any, row: int) -> np.ndarray:
        where = f"Row {row} of split '{self.split}' of the {self.role} dataset {self.source}"
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes | bytearray):
            held = f"only the path {value.get('path')!r}" if isinstance(value, dict) and value.get("path") else "no image"
            raise DataError(
                f"{where} holds {held}, not the image bytes; naa-guard audits the images a dataset holds. "
                "Fix: embed the images (datasets writes them into to_parquet / save_to_disk files), or point the key at the image folder."
            )
        return decode_bytes(data, self.size, self.channels, self.notes, where, self.origin(row), "re-encode or drop that row")
