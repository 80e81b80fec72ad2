"""Which weight files of a component folder load: the plain files, or the precision variant ``model.variant`` names.

diffusers and transformers save a precision variant beside the plain weights under a tagged name:
``diffusion_pytorch_model.fp16.safetensors`` / ``model.bf16.safetensors``, sharded as
``diffusion_pytorch_model.fp16-00001-of-00002.safetensors`` with the index
``diffusion_pytorch_model.safetensors.index.fp16.json``. A folder may hold several. The rule (fail
closed, never a guess): with ``model.variant`` set, every component with weights loads that variant's
files and a component without them is an error; without it, the plain files load, and a component
whose weights exist only as a variant is an error naming the variant to set. The files chosen here are
the ones loaded, checked strictly and named in the score cache key; the folder's other weight files are
in none of the three (swapping them changes nothing, swapping a chosen one changes the key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from naa_guard.errors import TargetError

VARIANTS = ("fp16", "bf16")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SHARD = re.compile(r"-\d+-of-\d+$")
_INDEX = re.compile(r"^(?P<stem>[^.]+)\.(?P<ext>safetensors|bin)\.index(?:\.(?P<variant>[^.]+))?\.json$")
# the weight file stem of each library: diffusers models, transformers models
STEMS = {"diffusers": ("diffusion_pytorch_model", "diffusion_pytorch_model"), "transformers": ("model", "pytorch_model")}


@dataclass(frozen=True)
class WeightChoice:
    """The weight files a component loads: their form, variant, the files themselves (shards) and the index read."""

    use_safetensors: bool
    variant: str | None
    files: tuple[Path, ...]
    index: Path | None = None

    @property
    def identity(self) -> tuple[Path, ...]:
        """Return every file the load reads: the weights and the shard index."""
        return (*self.files, self.index) if self.index is not None else self.files


def is_weight_file(path: Path) -> bool:
    """Return True for a weight file or a shard index (the files the variant rule chooses among)."""
    return path.suffix == ".safetensors" or path.suffix in PICKLE_WEIGHT_SUFFIXES or _INDEX.match(path.name) is not None


def file_variant(name: str) -> str | None:
    """Return the variant tag of a weight file or shard index name (``fp16`` in ``model.fp16-00001-of-00002.safetensors``), None when plain."""
    index = _INDEX.match(name)
    if index is not None:
        return index["variant"]
    base, _, _ = name.rpartition(".")
    parts = _SHARD.sub("", base).split(".")
    return parts[-1] if len(parts) >= 2 else None


def _found(files: list[Path]) -> str:
    return ", ".join(p.name for p in files) or "no weight files"


def choose_weights(folder: Path, variant: str | None, library: str = "diffusers") -> WeightChoice:
    """Return the weight files ``folder`` loads under ``model.variant`` (None: the plain files); raise TargetError when it has none of them.

    ``library``: ``diffusers`` (``diffusion_pytorch_model.*``) or ``transformers`` (``model.*``, ``pytorch_model.*``).
    Safetensors are preferred to pickles; whether a pickle may load is decided by the loader (``model.allow_pickle``).
    """
    from naa_guard.targets.modelcheck import read_json_object

    safe_stem, pickle_stem = STEMS[library]
    every = sorted(p for p in folder.iterdir() if p.is_file() and is_weight_file(p))
    mine = [p for p in every if file_variant(p.name) == variant]
    tag = f".{variant}" if variant else ""
    if not mine:
        raise _no_weights(folder, variant, every, f"{safe_stem}{tag}.safetensors")
    names = {p.name: p for p in mine}
    for ext, stem in ((".safetensors", safe_stem), (".bin", pickle_stem)):
        single = names.get(f"{stem}{tag}{ext}")
        if single is not None:
            return WeightChoice(ext == ".safetensors", variant, (single,))
        index = names.get(f"{stem}{ext}.index{tag}.json")
        if index is not None:
            weight_map = read_json_object(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) and "/" not in v and v not in (".", "..") for v in weight_map.values()):
                raise TargetError(f"{index}: weight_map must map tensor names to shard file names in this folder. Re-save the component with save_pretrained.")
            return WeightChoice(ext == ".safetensors", variant, tuple(folder / shard for shard in sorted(set(weight_map.values()))), index)
    pickles = [p for p in mine if p.suffix in PICKLE_WEIGHT_SUFFIXES]
    if pickles:
        return WeightChoice(False, variant, tuple(pickles))
    raise _no_weights(folder, variant, every, f"{safe_stem}{tag}.safetensors")


def _no_weights(folder: Path, variant: str | None, every: list[Path], expected: str) -> TargetError:
    tags = sorted({t for t in (file_variant(p.name) for p in every) if t is not None})
    if variant is not None:
        others = " or ".join(f"model.variant: {t}" for t in tags if t != variant)
        plain = any(file_variant(p.name) is None for p in every)
        fix = "; ".join(filter(None, [
            "remove model.variant to load the plain weights" if plain else "",
            f"set {others}" if others else "",
            f"or save the component with save_pretrained(..., variant=\"{variant}\")",
        ]))  # fmt: skip
        return TargetError(f"{folder}: model.variant is {variant!r}, but this component has no {variant} weights ({expected} or its shards); found {_found(every)}. Fix: {fix}.")
    variants = [t for t in tags if t in VARIANTS]
    if variants:
        return TargetError(
            f"{folder}: the weights exist only as the precision variant {' / '.join(variants)} ({_found(every)}), and model.variant is not set; "
            f"naa-guard loads the plain weights unless the policy names a variant. Set model.variant: {variants[0]} in the policy's model section."
        )
    return TargetError(f"{folder}: no weights found; expected {expected} (found {_found(every)}). Save this component with save_pretrained.")


def component_files(folder: Path, variant: str | None, name: str) -> list[Path]:
    """Return the files of pipeline component ``name`` that identify it under ``model.variant``: every file but the
    weights, and the weights that load (a component with weights that has none of the variant's is an error)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    if name.startswith("tokenizer") or name == "scheduler":
        return files
    chosen = set(choose_weights(folder, variant, library_of(name)).identity)
    return [p for p in files if not is_weight_file(p) or p in chosen]


def weight_files_for(folder: Path, use_safetensors: bool, variant: str | None) -> list[Path]:
    """Return the weight files diffusers loads from ``folder`` for this variant (shards included), as :func:`choose_weights` chooses them."""
    return list(choose_weights(folder, variant, "diffusers").files)


def library_of(name: str) -> str:
    """Return which library saved a pipeline component's weights: transformers for text encoders, else diffusers."""
    return "transformers" if name.startswith("text_encoder") else "diffusers"


def folder_variant(root: Path) -> str | None:
    """Return the variant a pipeline folder needs: None when every component with weights has plain ones, else the first of
    :data:`VARIANTS` every such component has (for ``init``; the audit checks the choice strictly)."""
    tags = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        found = {file_variant(p.name) for p in folder.iterdir() if p.is_file() and is_weight_file(p)}
        if found:
            tags.append(found)
    if all(None in found for found in tags):
        return None
    shared = [v for v in VARIANTS if all(v in found for found in tags)]
    return shared[0] if shared else None
