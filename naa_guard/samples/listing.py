"""List a sample set from its source: an image folder, an array file or a manifest.

:func:`list_samples` only lists a set (file names, indices, captions): its images are decoded
chunk by chunk, as a batch needs them (:meth:`SampleSet.decode`). :func:`load_samples` decodes the
whole set at once, for small sets. A seeded ``limit`` keeps a subset, in the source's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.errors import DataError
from naa_guard.samples.arrays import ARRAY_SUFFIXES, list_array_file
from naa_guard.samples.folder import IMAGE_EXTENSIONS, ImageFiles, list_folder
from naa_guard.samples.hfdataset import hub_name_hint, is_dataset, list_dataset
from naa_guard.samples.keys import select_keys
from naa_guard.samples.manifest import MANIFEST_SUFFIXES, list_manifest
from naa_guard.samples.sampleset import Notes, SampleSet, choose
from naa_guard.samples.shards import has_braces, is_shards, list_shards, url_problem


def list_samples(
    source: str | Path,
    *,
    size: int,
    channels: int,
    limit: int | None = None,
    seed: int = 0,
    role: str = "members",
    allow_outside: bool = False,
    fit: str | None = None,
    caption_column: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    keys: Path | None = None,
) -> SampleSet:
    """Return the sample set at `source`, listed and checked but not decoded (see SampleSet.decode).

    ``fit`` (None, "resize", "center_crop" or "pad") says how images of another size are
    brought to ``size`` when decoded; None makes a size mismatch a DataError. Captions come from
    a manifest's caption column, or a folder's metadata files and sidecars (:mod:`naa_guard.samples.captions`);
    ``caption_column`` names the column when it is neither ``caption`` nor ``text``. A Hugging Face
    dataset (parquet, save_to_disk) takes ``split`` and ``image_column`` (:mod:`naa_guard.samples.hfdataset`).
    ``keys`` (``data.keys``) is a key list that selects samples before the seeded ``limit`` (:mod:`naa_guard.samples.keys`).
    """
    _check_arguments(size, channels, limit, role)
    if keys is not None:
        listed = list_samples(
            source, size=size, channels=channels, seed=seed, role=role, allow_outside=allow_outside, fit=fit,
            caption_column=caption_column, split=split, image_column=image_column,
        )  # fmt: skip
        return select_keys(listed, Path(keys), limit, seed, role)
    problem = url_problem(source, role)
    if problem is not None:
        raise DataError(problem)
    path = Path(source)
    check_source(path, role)
    notes = Notes(role, size, fit)
    if is_shards(path):
        _no_split(split, path, role)
        return list_shards(path, size=size, channels=channels, limit=limit, seed=seed, role=role, notes=notes, image_field=image_column, caption_name=caption_column)
    if is_dataset(path):
        return list_dataset(path, size=size, channels=channels, limit=limit, seed=seed, role=role, notes=notes, split=split, image_column=image_column, caption_name=caption_column)
    _no_split(split, path, role)
    is_folder, suffix = path.is_dir(), path.suffix.lower()
    if not is_folder and suffix in ARRAY_SUFFIXES:
        return list_array_file(path, size, channels, limit, seed, role, notes)
    if not is_folder and suffix not in MANIFEST_SUFFIXES:
        raise DataError(
            f"The {role} source {path} has the unsupported form '{suffix or '(no suffix)'}'. "
            f"Supported: a folder of images ({', '.join(IMAGE_EXTENSIONS)}), a .npy or .npz "
            "array file, a .csv / .jsonl manifest with a 'path' column, or a Hugging Face dataset "
            "(.parquet, a save_to_disk folder). Fix: point the "
            "source at one of these (a single image must be put in a folder)."
        )
    entries, caption_files = list_folder(path, role, notes, caption_column, allow_outside) if is_folder else (list_manifest(path, role, allow_outside, caption_column), ())
    indices = choose(len(entries), limit, seed)
    chosen = [entries[i] for i in indices]  # only these are ever decoded
    # A folder's listing decides which file gets which index (and so its noise seed), so a
    # cache key must see every file; a manifest fixes the listing itself, so chosen files do.
    if is_folder:
        files = (*(e.file for e in entries), *caption_files)
    else:
        files = (path, *dict.fromkeys(e.file for e in chosen))
    return SampleSet(
        reader=ImageFiles(chosen, size, channels, role, notes),
        rows=np.arange(len(chosen), dtype=np.int64),
        names=tuple(e.name for e in chosen),
        indices=indices,
        captions=tuple(e.caption for e in chosen),
        source=path,
        files=files,
        log=notes,
    )


def load_samples(source: str | Path, **options: Any) -> SampleSet:
    """Return the sample set at `source`, every image decoded to float32 (N, channels, size, size).

    Takes the keyword arguments of :func:`list_samples`; for small sets (memory grows with the set).
    """
    return list_samples(source, **options).materialize()


def check_source(source: str | Path, role: str) -> None:
    """Return None; raise DataError if a sample source does not exist or is neither a folder nor a regular file.

    Cheap (two stats, no imports beyond this module), so a policy's paths can be checked before
    any model code loads. A named pipe or a device would block a read forever.
    """
    path = Path(source)
    problem = url_problem(source, role)
    if problem is not None:
        raise DataError(problem)
    if has_braces(path) and not path.exists():  # a brace pattern of webdataset shards: each file must exist and be regular
        from naa_guard.samples.shards import shard_files

        for shard in shard_files(path, role):
            check_source(shard, role)
        return
    if not path.exists():
        raise DataError(
            f"The {role} source {path} does not exist (looked for {path.absolute()}). "
            "Fix: check the path for a typo, or give an absolute path to an image folder, "
            "a .npy / .npz array file, a .csv / .jsonl manifest or a local Hugging Face dataset." + hub_name_hint(path)
        )
    if not (path.is_dir() or path.is_file()):
        raise DataError(
            f"The {role} source {path} is neither a folder nor a regular file (a named pipe, socket or device); "
            "reading it could block forever. Fix: point the source at an image folder, an array file or a manifest."
        )


def _no_split(split: str | None, path: Path, role: str) -> None:
    """Return None; raise DataError when a split is asked of a source that has none."""
    if split is not None:  # a split names part of a dataset; any other source would ignore it without a word
        raise DataError(
            f"data.split asks the {role} set for split '{split}', but the {role} source {path} is not a Hugging Face dataset "
            "(a .parquet file, a folder of parquet shards or a save_to_disk folder), and it has no splits. Fix: remove data.split, "
            f"or give it per side for the dataset sides only (e.g. {{members: train}}), or point data.{role} at the dataset's split."
        )


def _check_arguments(size: int, channels: int, limit: int | None, role: str) -> None:
    """Return None; raise DataError if size, channels or limit are unusable."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise DataError(
            f"Image size for the {role} set must be a positive integer, got {size!r}. "
            "Fix: set the size to the model's input resolution (e.g. 32 or 64)."
        )
    if channels not in (1, 3):
        raise DataError(
            f"Channel count for the {role} set must be 1 (grayscale) or 3 (RGB), got "
            f"{channels!r}. Fix: set it to the model's number of input channels."
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise DataError(
            f"limit for the {role} set must be a positive integer or omitted, got {limit!r}. "
            "Fix: remove the limit to use every sample, or give how many to draw (>= 1)."
        )
