"""What ``naa-guard init`` recognises beyond folders, arrays and manifests: Hugging Face datasets
(a parquet file, a folder of shards, a save_to_disk folder, with a split per side), single-file
checkpoints (``--config`` names the diffusers folder of their architecture) and Hub ids (``org/name``)
found in the local hub cache. Each is written as the policy keys the audit reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from naa_guard.errors import PolicyError, TargetError
from naa_guard.samples import list_samples

if TYPE_CHECKING:
    from naa_guard.init_policy import ModelSummary, SetSummary

__all__ = ["inspect_dataset", "model_folder", "model_lines", "split_lines"]


def model_folder(model: str | Path, config: Path | None) -> Path:
    """Return the folder whose configs describe the model: ``--config`` for a single file, the cached snapshot for org/name."""
    from naa_guard.targets.hubcache import resolve_hub_path
    from naa_guard.targets.single_file import SINGLE_FILE_SUFFIXES

    path = Path(model)
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        if config is None:
            raise PolicyError(f"{path} is a single-file checkpoint; give --config FOLDER, a local diffusers folder of the same architecture (e.g. the base it was tuned from).")
        return config
    if config is not None:
        raise PolicyError("--config applies to a single-file checkpoint (.safetensors / .ckpt) only; a diffusers folder carries its own configs.")
    try:
        return Path(resolve_hub_path(str(model), None, "MODEL"))
    except ValueError as exc:
        raise TargetError(str(exc)) from None


def model_lines(model: str | Path, config: Path | None, policy_dir: Path) -> list[str]:
    """Return the policy's model keys: path (a folder or a cached org/name), or single_file + config."""
    path = Path(model)
    if config is not None:
        return [f"  single_file: {json.dumps(_relative(path, policy_dir))}", f"  config: {json.dumps(_relative(config, policy_dir))}"]
    if not path.exists():  # a Hub id resolved in the local cache: keep the id, the audit resolves it again
        return [f"  path: {json.dumps(str(model))}   # from the local Hugging Face cache (refs/main); the report records the snapshot"]
    return [f"  path: {json.dumps(_relative(path, policy_dir))}"]


def inspect_dataset(source: Path, role: str, model: ModelSummary, split: str | None) -> SetSummary:
    """Return a dataset split's summary: its rows, the sizes of a few images, its captions."""
    from naa_guard.init_policy import SetSummary

    listed = list_samples(source, size=model.sample_size, channels=model.in_channels, role=role, fit="resize", split=split)
    listed.decode(0, min(4, len(listed)))  # a few rows decoded as the audit would: undecodable rows fail here
    chosen = listed.names[0].split("[")[0]
    captions = sum(caption is not None for caption in listed.captions)
    return SetSummary(source, f"Hugging Face dataset, split '{chosen}',", len(listed), (), captions, split=chosen)


def split_lines(members: SetSummary, nonmembers: SetSummary) -> list[str]:
    """Return the data.split line when a side is a dataset split."""
    sides = {role: s.split for role, s in (("members", members), ("nonmembers", nonmembers)) if s.split is not None}
    if not sides:
        return []
    return [f"  split: {{{', '.join(f'{role}: {json.dumps(name)}' for role, name in sides.items())}}}   # the dataset split each side is read from"]


def _relative(path: Path, policy_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), policy_dir.resolve())).as_posix()
