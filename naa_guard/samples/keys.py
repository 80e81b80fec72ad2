"""``data.keys``: the training subset of a corpus, selected by sample key, one key list per side.

A key list is a text file (one key per line, blank lines skipped), or a CSV / parquet file with a
``key`` column. A sample's key is its webdataset key in shards, the ``key`` column of a dataset
(as img2dataset writes it), and its path relative to the folder or manifest without the suffix
(``sub/000.png`` has the key ``sub/000``) in a folder or a manifest. Every listed key must name
at least one sample (a key that names none is an error listing a few), and a key in two sides'
lists is an overlap error before anything is scored. The selection comes before ``data.limit``,
whose seeded subsample is drawn from the selected samples.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.errors import AuditInvalidError, DataError
from naa_guard.samples.sampleset import SampleSet, choose
from naa_guard.userfiles import open_regular, read_regular_text

__all__ = ["check_key_overlap", "read_keys", "select_keys"]

_EXAMPLES = 5
KEY_COLUMN = "key"


def read_keys(file: Path, role: str) -> list[str]:
    """Return the keys a key list holds, in order; raise DataError when it cannot be read or holds none."""
    what, fix = f"The {role} key list (data.keys)", f"Fix: point data.keys.{role} at a text file of one key per line, or a CSV / parquet file with a '{KEY_COLUMN}' column."
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        keys = _parquet_keys(file, what, fix)
    elif suffix == ".csv":
        rows = csv.DictReader(io.StringIO(read_regular_text(file, DataError, what, fix)))
        if KEY_COLUMN not in (rows.fieldnames or ()):
            raise DataError(f"{what} {file} has no '{KEY_COLUMN}' column; its columns are {', '.join(rows.fieldnames or ()) or 'none'}. {fix}")
        keys = [str(row[KEY_COLUMN] or "").strip() for row in rows]
    else:
        keys = [line.strip() for line in read_regular_text(file, DataError, what, fix).splitlines()]
    keys = [key for key in keys if key]
    if not keys:
        raise DataError(f"{what} {file} holds no keys; it would select no sample. {fix}")
    return keys


def _parquet_keys(file: Path, what: str, fix: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{what} {file} is a parquet file, which needs pyarrow. Fix: pip install \"naa-guard[datasets]\", or write the keys one per line.") from None
    with open_regular(file, DataError, what, fix) as handle:
        try:
            table = pq.read_table(handle, columns=None)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
            raise DataError(f"Cannot read {what} {file} ({type(exc).__name__}: {exc}). {fix}") from None
    if KEY_COLUMN not in table.column_names:
        raise DataError(f"{what} {file} has no '{KEY_COLUMN}' column; its columns are {', '.join(table.column_names)}. {fix}")
    return [str(value).strip() for value in table.column(KEY_COLUMN).to_pylist() if value is not None]


def check_key_overlap(lists: dict[str, Path]) -> None:
    """Return None; raise AuditInvalidError when a key is in two sides' key lists (read before anything is scored)."""
    read = {role: set(read_keys(file, role)) for role, file in lists.items()}
    roles = list(read)
    for i, first in enumerate(roles):
        for second in roles[i + 1 :]:
            shared = sorted(read[first] & read[second])
            if shared:
                raise AuditInvalidError(
                    f"data.keys lists {len(shared)} key(s) for both the {first} ({lists[first]}) and the {second} ({lists[second]}), e.g. "
                    f"{', '.join(shared[:_EXAMPLES])}; a sample cannot be both, and an audit of it would measure nothing. "
                    "Fix: remove the shared keys from one of the two lists (the held-out list must hold only samples never trained on)."
                )


def sample_keys(samples: SampleSet, role: str) -> tuple[str, ...]:
    """Return each sample's key in the set's order; raise DataError for a source without keys (an array file)."""
    reader: Any = samples.reader
    keys = getattr(reader, "keys", None)
    if isinstance(keys, tuple):  # webdataset shards
        return tuple(keys[int(row)] for row in samples.rows)
    table = getattr(reader, "table", None)
    if table is not None:  # a Hugging Face / parquet dataset: its key column
        if KEY_COLUMN not in table.features:
            raise DataError(
                f"data.keys selects {role} samples by key, but the {role} dataset {samples.source} has no '{KEY_COLUMN}' column "
                f"(its columns are {', '.join(table.features)}). Fix: add a '{KEY_COLUMN}' column (img2dataset writes one), or remove data.keys.{role}."
            )
        return tuple(str(value) for value in table.read(samples.rows, KEY_COLUMN))
    if hasattr(reader, "entries"):  # an image folder or a manifest: the relative path without its suffix
        return tuple(name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name for name in samples.names)
    raise DataError(f"data.keys selects {role} samples by key, but the {role} source {samples.source} is an array file, whose samples have no keys. Fix: remove data.keys.{role}, or store the set as shards, a dataset with a '{KEY_COLUMN}' column or an image folder.")


def select_keys(samples: SampleSet, file: Path, limit: int | None, seed: int, role: str) -> SampleSet:
    """Return the samples whose key the list names (then the seeded ``limit``); raise DataError for a key that names no sample."""
    wanted = read_keys(file, role)
    keys = sample_keys(samples, role)
    present = set(keys)
    missing = list(dict.fromkeys(key for key in wanted if key not in present))
    if missing:
        raise DataError(
            f"The {role} key list {file} (data.keys) names {len(missing)} key(s) that name no sample of {samples.source}, e.g. "
            f"{', '.join(missing[:_EXAMPLES])} (the source's keys look like {', '.join(keys[:3])}). "
            "Fix: list the keys of samples the source holds (webdataset keys, a dataset's key column, or file paths without suffix), or point the side at the source they came from."
        )
    chosen = set(wanted)
    positions = np.asarray([i for i, key in enumerate(keys) if key in chosen], dtype=np.int64)
    positions = positions[choose(len(positions), limit, seed)]
    kept = samples.subset(positions)
    return replace(kept, files=(*kept.files, file))
