"""Loading an SD3 or Flux pipeline folder as its flow target, offline and strictly.

Apart from the targets themselves (:mod:`~naa_guard.targets.flow`, :mod:`~naa_guard.targets.flux`)
so that the Flux target may build on the SD3 one without an import circle.
"""

from __future__ import annotations

from naa_guard.errors import TargetError
from naa_guard.targets.base import check_component_weights, offline_environment, resolve_device
from naa_guard.targets.flow import SHARDED_INDEX, FlowTarget
from naa_guard.targets.flow_info import FlowModelInfo
from naa_guard.targets.flux import FluxTarget
from naa_guard.targets.latent import _import_sd_libraries


PARTS = ("all", "encoders", "denoiser")


def load_flow_target(info: FlowModelInfo, *, allow_pickle: bool, device: str, dtype: str, part: str = "all") -> FlowTarget:
    """Return the loaded SD3 or Flux target, offline and strictly (every weight from its files), on the device and dtype.

    ``part``: ``all`` the whole pipeline; ``encoders`` the VAE, text encoders and tokenizers (no
    transformer); ``denoiser`` the VAE, transformer and tokenizers (no text encoder). A LoRA is
    checked against the whole pipeline (it may touch the text encoders), so it loads only with ``all``.
    """
    if part not in PARTS or (part != "all" and info.lora is not None):
        raise ValueError(f"part {part!r}: expected one of {PARTS} (a LoRA: all)")
    transformers = _import_sd_libraries()
    import diffusers
    import torch

    from naa_guard.targets.components import load_component
    from naa_guard.targets.modelcheck import check_weights_match, weight_files_for

    torch_device, torch_dtype = resolve_device(device), getattr(torch, dtype)
    folder = info.components["transformer"]
    verbosity = diffusers.logging.get_verbosity(), transformers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    try:
        with offline_environment():
            # Flux's T5 is text_encoder_2 / tokenizer_2: loaded under the names that select the T5 classes
            kind = {"text_encoder_2": "text_encoder_3", "tokenizer_2": "tokenizer_3"} if info.family == "flux" else {}
            skipped = ("transformer", "scheduler") + (("text_encoder", "text_encoder_2", "text_encoder_3") if part == "denoiser" else ())
            parts = {name: load_component(kind.get(name, name), path, transformers, allow_pickle) for name, path in info.components.items() if name not in skipped}
            if part != "encoders":
                use_safetensors, variant = (True, None) if (folder / SHARDED_INDEX).is_file() else check_component_weights(folder, allow_pickle)
                transformer = getattr(diffusers, "FluxTransformer2DModel" if info.family == "flux" else "SD3Transformer2DModel").from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False, torch_dtype=torch_dtype)  # built in the audit's dtype: Flux's 12B never in float32 (48 GB) first
                check_weights_match(transformer, weight_files_for(folder, use_safetensors, variant), folder)
                parts["transformer"] = transformer
            if info.lora is not None:  # SD3 only (read_flux_info refuses a Flux LoRA); checked to apply fully, as for SD / SDXL
                from naa_guard.targets.lora import apply_lora

                scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(info.components["scheduler"], local_files_only=True)
                apply_lora(parts, scheduler, info.lora, info.lora_scale, allow_pickle=allow_pickle)
        build = FluxTarget if info.family == "flux" else FlowTarget
        return build(parts, info.sample_size, torch_device, torch_dtype, config=info.unet_config, t5="text_encoder_3" in info.components)
    except (OSError, ValueError, RuntimeError) as exc:
        from naa_guard.targets.loaderror import load_error_detail

        raise TargetError(f"{info.root}: loading the {'Flux' if info.family == 'flux' else 'SD3'} pipeline failed: {load_error_detail(exc)} Check that each component's config matches its weights, or re-save the pipeline with save_pretrained.") from None
    finally:
        diffusers.logging.set_verbosity(verbosity[0])
        transformers.logging.set_verbosity(verbosity[1])
