"""Which model family a folder holds, read from its ``model_index.json`` or its subfolders.

:func:`read_model_info` looks at a folder without loading weights (so policies are checked and
images prepared before any model loads) and returns the family's info: a pixel-space UNet
(:mod:`~naa_guard.targets.pixel`) or a latent text-to-image pipeline
(:mod:`~naa_guard.targets.latent`). :func:`load_target` loads the model that info describes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Union

from naa_guard.errors import TargetError
from naa_guard.targets.base import read_json
from naa_guard.targets.flow_info import FLUX_PIPELINE, ISSUE, SD3_PIPELINE, FlowModelInfo, read_flux_info, read_sd3_info
from naa_guard.targets.latent import load_latent_target
from naa_guard.targets.latent_info import LatentModelInfo, read_latent_info
from naa_guard.targets.modelcheck import check_model_index
from naa_guard.targets.pixel import ModelInfo, load_pixel_target, read_pixel_info
from naa_guard.userfiles import entry_problem, first_unreadable

if TYPE_CHECKING:
    from naa_guard.targets.base import Target
    from naa_guard.targets.single_file import SingleFileInfo

AnyModelInfo = Union[ModelInfo, LatentModelInfo]
# Subfolders only a latent text-to-image pipeline has: one of them marks a bare folder as latent.
LATENT_PARTS = ("vae", "text_encoder", "tokenizer")


def _is_latent(root: Path, index: dict[str, object] | None, unet_subfolder: str | None) -> bool:
    if index is not None:
        return any(part in index for part in LATENT_PARTS)
    if any((root / part).is_dir() for part in LATENT_PARTS):
        return True
    unet_config = root / (unet_subfolder or "unet") / "config.json"
    return unet_config.is_file() and read_json(unet_config).get("_class_name") == "UNet2DConditionModel"


def check_model_files(root: Path, key: str) -> None:
    """Return None; raise TargetError when a file of the model folder is a pipe, a device or a broken link.

    diffusers and transformers open a folder's files by name; a named pipe among them would block
    the load forever, and a broken link (an interrupted download) would fail deep inside it.
    The folder's own files and its components' (one level of subfolders) are checked: that is what
    the loaders read, and a model.path that is not a model folder costs one listing per subfolder.
    """
    from naa_guard.targets.hubcache import snapshot_of

    found = first_unreadable(root, depth=2)
    if found is None:
        return
    entry, problem = found
    snapshot = snapshot_of(entry)
    if snapshot is not None and "broken link" in problem:
        fix = f"This is a Hugging Face cache snapshot whose download did not finish: run `hf download {snapshot[0]}` (huggingface-cli download {snapshot[0]}) again"
    else:
        fix = "Replace it with the regular file it stands for, or re-save the model with save_pretrained"
    raise TargetError(f"{key} {root}: {entry} {problem}. {fix}.")


def read_model_info(path: Path, unet_subfolder: str | None = None, *, lora: Path | None = None, lora_scale: float = 1.0, key: str = "model.path") -> AnyModelInfo:
    """Return the model folder's family, layout and image geometry, without importing torch.

    ``key`` names the policy key the folder came from in messages (model.path, model.config, model.reference).
    """
    root = Path(path)
    if not root.is_dir():
        raise TargetError(
            f"{key} {root} does not exist or is not a folder. Point {key} at a diffusers "
            f"folder (with model_index.json, or unet/ and scheduler/ subfolders), relative to the policy file."
        )
    check_model_files(root, key)
    index_file = root / "model_index.json"
    index = read_json(index_file) if index_file.is_file() else None
    if index is not None:
        check_model_index(index, index_file)  # entries of the wrong form are an error, not ignored
    if index is not None and "transformer" in index and "unet" not in index:
        if index.get("_class_name") == SD3_PIPELINE and unet_subfolder is None:
            return read_sd3_info(root, index, lora=lora, lora_scale=lora_scale)
        if index.get("_class_name") == FLUX_PIPELINE and unet_subfolder is None:
            return read_flux_info(root, index, lora=lora, lora_scale=lora_scale)
        raise TargetError(
            f"{index_file}: this pipeline ({index.get('_class_name')}) denoises with a transformer (PixArt, Sana, Flux Kontext / Fill, ...); "
            f"naa-guard audits UNet pipelines (DDPM, Stable Diffusion 1.x/2.x, SDXL), {SD3_PIPELINE} and {FLUX_PIPELINE} for now; "
            f"the other transformer pipelines are not audited yet ({ISSUE})."
        )
    if index is None and (root / "transformer").is_dir() and not (root / (unet_subfolder or "unet")).is_dir():
        raise TargetError(
            f"{root}: a transformer/ folder and no model_index.json; naa-guard recognises a transformer pipeline (SD3) by its "
            f"model_index.json. Save the whole pipeline with save_pretrained."
        )
    if _is_latent(root, index, unet_subfolder):
        sdxl = "text_encoder_2" in index if index is not None else (root / "text_encoder_2").is_dir()
        return read_latent_info(root, unet_subfolder, sdxl=sdxl, lora=lora, lora_scale=lora_scale)
    if lora is not None:
        raise TargetError(
            f"{root}: model.lora is set, but this is a pixel-space model without a text encoder; LoRA adapters "
            f"apply to Stable Diffusion / SDXL pipelines. Remove model.lora, or point model.path at the LoRA's base pipeline."
        )
    return read_pixel_info(root, unet_subfolder, key=key)


def read_single_file_info(single_file: Path, config: Path | None, unet_subfolder: str | None = None) -> SingleFileInfo:
    """Return the single-file model's info: geometry from the config folder, the file checked to exist and be whole."""
    from naa_guard.targets.modelcheck import read_safetensors_header
    from naa_guard.targets.single_file import SINGLE_FILE_SUFFIXES, SingleFileInfo, check_not_lora

    file = Path(single_file)
    problem = entry_problem(file)
    if problem is not None:
        raise TargetError(f"model.single_file {file} {problem}. Point it at the .safetensors / .ckpt checkpoint itself.")
    if not file.is_file():
        raise TargetError(f"model.single_file {file}: no such file. Point it at the .safetensors / .ckpt checkpoint (relative to the policy file).")
    if file.suffix not in SINGLE_FILE_SUFFIXES:
        raise TargetError(f"model.single_file {file}: unknown checkpoint form '{file.suffix}'; expected {', '.join(SINGLE_FILE_SUFFIXES)}.")
    if config is None:
        raise TargetError("model.single_file is set without model.config: give a local diffusers folder of the same architecture (e.g. the base model the checkpoint was tuned from).")
    info = read_model_info(Path(config), unet_subfolder, key="model.config")
    if isinstance(info, FlowModelInfo):
        raise TargetError(f"model.config {config}: an SD3 pipeline; single-file checkpoints of flow-matching transformers are not read yet ({ISSUE}). Save the model as a diffusers folder and point model.path at it.")
    if not isinstance(info, LatentModelInfo):
        raise TargetError(f"model.config {config}: a pixel-space model; single-file checkpoints are read for Stable Diffusion 1.x / 2.x / SDXL pipelines. Point model.path at the diffusers folder instead.")
    if file.suffix == ".safetensors":
        names = list(read_safetensors_header(file))  # a truncated file is named now, before any model code loads
        check_not_lora(names, file, config)  # a LoRA given as a whole model is named as one
    return SingleFileInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)}, single_file=file)


def load_target(info: AnyModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> Target:
    """Return the loaded target for a model folder's info, offline, on the requested device and dtype."""
    from naa_guard.targets.single_file import SingleFileInfo, load_single_file_target

    if isinstance(info, SingleFileInfo):
        return load_single_file_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, FlowModelInfo):
        from naa_guard.targets.flowload import load_flow_target

        return load_flow_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, LatentModelInfo):
        return load_latent_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    return load_pixel_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
