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
from naa_guard.targets.flux2_info import FLUX2_DEV_PIPELINE, FLUX2_DEV_REFUSAL, KLEIN_PIPELINE, read_flux2_klein_info
from naa_guard.targets.latent import load_latent_target
from naa_guard.targets.latent_info import LatentModelInfo, read_latent_info
from naa_guard.targets.modelcheck import check_model_index
from naa_guard.targets.pixart_info import PIXART_TOKENS, PixArtModelInfo, read_pixart_info
from naa_guard.targets.pixel import ModelInfo, load_pixel_target, read_pixel_info
from naa_guard.targets.sana_info import SANA_PIPELINE, SanaModelInfo, read_sana_info
from naa_guard.userfiles import entry_problem, first_unreadable

if TYPE_CHECKING:
    from naa_guard.targets.base import Target
    from naa_guard.targets.flow_single_file import FlowSingleFileInfo
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


def read_model_info(
    path: Path, unet_subfolder: str | None = None, *, lora: Path | None = None, lora_scale: float = 1.0, key: str = "model.path", variant: str | None = None, weights: bool = True,
) -> AnyModelInfo:  # fmt: skip
    """Return the model folder's family, layout and image geometry, without importing torch.

    ``key`` names the policy key the folder came from in messages (model.path, model.config, model.reference);
    ``variant`` is ``model.variant`` (the precision variant whose weight files load); ``weights``: check now that
    every component has the weight files that variant names (not for a single file's model.config, whose
    components the file may hold).
    """
    info = _read_model_info(Path(path), unet_subfolder, lora=lora, lora_scale=lora_scale, key=key, variant=variant)
    if weights and isinstance(info, LatentModelInfo):
        info.identity_files()  # every component's weight files chosen now: a missing variant is named before any model loads
    return info


def _read_model_info(root: Path, unet_subfolder: str | None, *, lora: Path | None, lora_scale: float, key: str, variant: str | None) -> AnyModelInfo:
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
            return read_sd3_info(root, index, lora=lora, lora_scale=lora_scale, variant=variant)
        if index.get("_class_name") == FLUX_PIPELINE and unet_subfolder is None:
            return read_flux_info(root, index, lora=lora, lora_scale=lora_scale, variant=variant)
        newer = {SANA_PIPELINE: "Sana", KLEIN_PIPELINE: "Flux 2 [klein]", **{name: "PixArt" for name in PIXART_TOKENS}}
        if variant is not None and index.get("_class_name") in newer:  # their loaders read the plain weight files only
            raise TargetError(
                f"{index_file}: model.variant is {variant!r}, but precision variants are read for pixel, SD / SDXL, SD3 and Flux pipelines only; "
                f"a {newer[str(index['_class_name'])]} pipeline loads its plain weight files. Remove model.variant, or save the pipeline without variant=."
            )
        if index.get("_class_name") in PIXART_TOKENS and unet_subfolder is None:
            return read_pixart_info(root, index, lora=lora, pipeline=str(index["_class_name"]))
        if index.get("_class_name") == SANA_PIPELINE and unet_subfolder is None:
            return read_sana_info(root, index, lora=lora)
        if index.get("_class_name") == KLEIN_PIPELINE and unet_subfolder is None:
            return read_flux2_klein_info(root, index, lora=lora)
        if index.get("_class_name") == FLUX2_DEV_PIPELINE:
            raise TargetError(f"{index_file}: {FLUX2_DEV_REFUSAL}")
        raise TargetError(
            f"{index_file}: this pipeline ({index.get('_class_name')}) denoises with a transformer (Sana Sprint, Flux Kontext / Fill, ...); "
            f"naa-guard audits UNet pipelines (DDPM, Stable Diffusion 1.x/2.x, SDXL), {SD3_PIPELINE}, {FLUX_PIPELINE}, {KLEIN_PIPELINE}, {', '.join(PIXART_TOKENS)} and {SANA_PIPELINE} for now; "
            f"the other transformer pipelines are not audited yet ({ISSUE})."
        )
    if index is None and (root / "transformer").is_dir() and not (root / (unet_subfolder or "unet")).is_dir():
        raise TargetError(
            f"{root}: a transformer/ folder and no model_index.json; naa-guard recognises a transformer pipeline (SD3) by its "
            f"model_index.json. Save the whole pipeline with save_pretrained."
        )
    if _is_latent(root, index, unet_subfolder):
        sdxl = "text_encoder_2" in index if index is not None else (root / "text_encoder_2").is_dir()
        return read_latent_info(root, unet_subfolder, sdxl=sdxl, lora=lora, lora_scale=lora_scale, variant=variant)
    if lora is not None:
        raise TargetError(
            f"{root}: model.lora is set, but this is a pixel-space model without a text encoder; LoRA adapters "
            f"apply to Stable Diffusion / SDXL pipelines. Remove model.lora, or point model.path at the LoRA's base pipeline."
        )
    return read_pixel_info(root, unet_subfolder, key=key, variant=variant)


def prediction_summary(info: AnyModelInfo) -> tuple[str, int]:
    """Return what a transformer pipeline's denoiser predicts, in words, and its training timesteps (``init`` writes them)."""
    if isinstance(info, PixArtModelInfo):
        steps = read_json(info.components["scheduler"] / "scheduler_config.json").get("num_train_timesteps", 1000)
        return f"{info.prediction_type} (PixArt DiT, DDPM noise prediction as the UNet families)", int(steps)
    return "flow matching (velocity)", 1000


def read_single_file_info(single_file: Path, config: Path | None, unet_subfolder: str | None = None, *, variant: str | None = None) -> SingleFileInfo | FlowSingleFileInfo:
    """Return the single-file model's info: geometry from the config folder, the file checked to exist and be whole.

    An SD 1.x / 2.x / SDXL file holds every weight; an SD3 / Flux file holds the transformer and maybe
    the VAE and text encoders, the others load from the config folder (its ``variant`` files).
    """
    from naa_guard.targets.flow_single_file import flow_single_file_info
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
    info = read_model_info(Path(config), unet_subfolder, key="model.config", variant=variant, weights=False)
    if isinstance(info, PixArtModelInfo) or getattr(info, "family", None) in ("sana", "flux2"):
        name = info.pipeline if isinstance(info, PixArtModelInfo) else {"sana": "SanaPipeline", "flux2": "Flux2KleinPipeline"}[str(getattr(info, "family"))]
        raise TargetError(
            f"model.config {config}: a {name}; single-file checkpoints are read for SD 1.x / 2.x / SDXL, SD3 / SD3.5 and Flux pipelines only ({ISSUE}). "
            "Save the model as a diffusers folder and point model.path at it."
        )
    if not isinstance(info, LatentModelInfo):
        raise TargetError(
            f"model.config {config}: a pixel-space model; single-file checkpoints are read for Stable Diffusion 1.x / 2.x / SDXL, SD3 / SD3.5 and Flux pipelines. "
            "Point model.path at the diffusers folder instead."
        )
    names = None
    if file.suffix == ".safetensors":
        names = list(read_safetensors_header(file))  # a truncated file is named now, before any model code loads
        check_not_lora(names, file, config)  # a LoRA given as a whole model is named as one
    if isinstance(info, FlowModelInfo):
        return flow_single_file_info(info, file, names)
    if variant is not None:
        raise TargetError(f"model.variant is {variant!r}, but an SD 1.x / 2.x / SDXL model.single_file holds every weight and model.config's weight files are not read; remove model.variant.")
    return SingleFileInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)}, single_file=file)


def load_target(info: AnyModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> Target:
    """Return the loaded target for a model folder's info, offline, on the requested device and dtype."""
    from naa_guard.targets.flow_single_file import FlowSingleFileInfo, load_flow_single_file_target
    from naa_guard.targets.single_file import SingleFileInfo, load_single_file_target

    if isinstance(info, FlowSingleFileInfo):
        return load_flow_single_file_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, SingleFileInfo):
        return load_single_file_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, PixArtModelInfo):
        from naa_guard.targets.pixart import load_pixart_target

        return load_pixart_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, SanaModelInfo):
        from naa_guard.targets.sana import load_sana_target

        return load_sana_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, FlowModelInfo):
        from naa_guard.targets.flowload import load_flow_target

        return load_flow_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    if isinstance(info, LatentModelInfo):
        return load_latent_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
    return load_pixel_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
