"""The model keys ``naa-guard init`` writes: the model's path (or single file + config), its LoRA and its reference."""

from __future__ import annotations

import json
import os
from pathlib import Path


def relative(path: Path, policy_dir: Path) -> str:
    """Return ``path`` relative to the policy's folder, as the policy writes it (forward slashes)."""
    return Path(os.path.relpath(path.resolve(), policy_dir.resolve())).as_posix()


def reference_lines(lora: Path | None, reference: Path | None, policy_dir: Path) -> list[str]:
    """Return the policy's LoRA and reference keys: a LoRA is calibrated against its base, a fine-tune against the given base."""
    why = "# every attack also scored calibrated (name/ref): minus the reference's score on the same noise"
    if lora is not None:
        return [f"  lora: {json.dumps(relative(lora, policy_dir))}", f"  reference: base      {why}"]
    if reference is not None:
        where = relative(reference, policy_dir)
        where = where if where.startswith((".", "/")) else f"./{where}"  # a folder named base is ./base: the word base means the LoRA's base
        return [f"  reference: {json.dumps(where)}  {why}"]
    return ["  # reference: ../base  # the model this one was fine-tuned from: calibrated attacks (name/ref), see the README"]


def model_lines(model: str | Path, config: Path | None, policy_dir: Path) -> list[str]:
    """Return the policy's model keys: path (a folder or a cached org/name), or single_file + config."""
    path = Path(model)
    if config is not None:
        return [f"  single_file: {json.dumps(relative(path, policy_dir))}", f"  config: {json.dumps(relative(config, policy_dir))}"]
    if not path.exists():  # a Hub id resolved in the local cache: keep the id, the audit resolves it again
        return [f"  path: {json.dumps(str(model))}   # from the local Hugging Face cache (refs/main); the report records the snapshot"]
    return [f"  path: {json.dumps(relative(path, policy_dir))}"]
