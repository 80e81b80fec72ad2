"""Loading an SD3 or Flux pipeline folder as its flow target, offline and strictly.

Apart from the targets themselves (:mod:`~naa_guard.targets.flow`, :mod:`~naa_guard.targets.flux`)
so that the Flux target may build on the SD3 one without an import circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import check_component_weights, offline_environment, resolve_device
from naa_guard.targets.flow import FlowTarget
from naa_guard.targets.flow_info import FlowModelInfo
from naa_guard.targets.flux import FluxTarget
from naa_guard.targets.latent import _import_sd_libraries

TRANSFORMERS = {"sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel", "flux2": "Flux2Transformer2DModel"}
FAMILY_NAMES = {"sd3": "SD3", "flux": "Flux", "flux2": "Flux 2"}

PARTS = ("all", "encoders", "denoiser")


def load_from_folder(info: FlowModelInfo, name: str, folder: Path, transformers: Any, allow_pickle: bool, torch_dtype: Any = None) -> Any:
    """Return one component of the pipeline loaded strictly from its folder (the weight files of ``model.variant``).

    The transformer is built in ``torch_dtype`` (the audit's): Flux's 12B is never first made in float32 (48 GB).
    """
    import diffusers

    from naa_guard.targets.components import load_component
    from naa_guard.targets.modelcheck import check_weights_match
    from naa_guard.targets.variants import weight_files_for

    if name != "transformer":
        # Flux's T5 is text_encoder_2 / tokenizer_2: loaded under the names that select the T5 classes
        kind = {"text_encoder_2": "text_encoder_3", "tokenizer_2": "tokenizer_3"} if info.family == "flux" else {}
        return load_component(kind.get(name, name), folder, transformers, allow_pickle, info.variant, torch_dtype)
    use_safetensors, variant = check_component_weights(folder, allow_pickle, variant=info.variant)
    transformer = getattr(diffusers, TRANSFORMERS[info.family]).from_pretrained(
        folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False, **({} if torch_dtype is None else {"torch_dtype": torch_dtype})
    )  # fmt: skip
    check_weights_match(transformer, weight_files_for(folder, use_safetensors, variant), folder)
    return transformer


def load_flow_target(info: FlowModelInfo, *, allow_pickle: bool, device: str, dtype: str, load: Any = None, part: str = "all") -> FlowTarget:
    """Return the loaded SD3 or Flux target, offline and strictly (every weight from its files), on the device and dtype.

    ``load(name, folder, transformers, allow_pickle)`` loads a component (default: :func:`load_from_folder`).
    ``part``: ``all`` the whole pipeline; ``encoders`` the VAE, text encoders and tokenizers (no
    transformer); ``denoiser`` the VAE, transformer and tokenizers (no text encoder). Only an SD3 or
    Flux folder without a LoRA loads in parts (a LoRA is checked against the whole pipeline; a single
    file's components come through ``load``).
    """
    if part not in PARTS or (part != "all" and (info.lora is not None or load is not None or info.family not in ("sd3", "flux"))):
        raise ValueError(f"part {part!r}: expected one of {PARTS} (only 'all' for a LoRA, a single file or a family other than SD3 / Flux)")
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    verbosity = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        with offline_environment():
            if info.family == "flux2":
                from naa_guard.targets.flux2load import load_flux2_parts

                parts = {**load_flux2_parts(info.components, transformers, allow_pickle, torch_dtype), "transformer": load_from_folder(info, "transformer", info.components["transformer"], transformers, allow_pickle, torch_dtype)}
            else:
                skipped = ("scheduler",) + (("transformer",) if part == "encoders" else ()) + (("text_encoder", "text_encoder_2", "text_encoder_3") if part == "denoiser" else ())
                parts = {
                    name: load(name, path, transformers, allow_pickle) if load is not None else load_from_folder(info, name, path, transformers, allow_pickle, torch_dtype)
                    for name, path in info.components.items() if name not in skipped
                }  # fmt: skip
            if info.lora is not None:  # checked to apply fully, as for SD / SDXL (a Flux LoRA layer by layer: targets/loralayers.py)
                from naa_guard.targets.lora import apply_lora

                scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(info.components["scheduler"], local_files_only=True)
                apply_lora(parts, scheduler, info.lora, info.lora_scale, allow_pickle=allow_pickle)
        if info.family == "flux2":
            from naa_guard.targets.flux2 import Flux2KleinTarget

            return Flux2KleinTarget(parts, info.sample_size, torch_device, torch_dtype)
        t5 = "text_encoder_3" in info.components
        if info.family == "flux":
            guidance = info.guidance_input
            return FluxTarget(parts, info.sample_size, torch_device, torch_dtype, config=info.unet_config, t5=t5, t5_tokens=info.t5_tokens, **({} if guidance is None else {"guidance": guidance}))
        return FlowTarget(parts, info.sample_size, torch_device, torch_dtype, config=info.unet_config, t5=t5, t5_tokens=info.t5_tokens)
    except (OSError, ValueError, RuntimeError) as exc:
        from naa_guard.targets.loaderror import load_error_detail

        raise TargetError(f"{info.root}: loading the {FAMILY_NAMES[info.family]} pipeline failed: {load_error_detail(exc)} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
