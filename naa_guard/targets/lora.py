"""LoRA adapters on a latent pipeline: loaded by the pipeline's own ``load_lora_weights``, then checked.

diffusers (through peft) only *warns* when a LoRA's tensors match no layer of the model, and a
LoRA that silently did not load leaves the base model, which never saw the LoRA's training images:
the audit would then certify a leaking fine-tune (a false PASS). So after loading, every LoRA
tensor of the file must be found, value for value, among the adapter weights of the UNet or the
text encoders; otherwise the load is an error. The adapter is applied at ``model.lora_scale``
through ``set_adapters`` (0 gives the base model's predictions), and every loaded layer's
effective scaling must then equal the alpha / rank x scale the file declares
(:mod:`naa_guard.targets.lorastrength`).

On Flux and SD3 pipelines the check is layer by layer instead (:mod:`naa_guard.targets.loralayers`):
every key of the file must name a layer (on Flux also through the kohya and ComfyUI layouts diffusers
converts, :mod:`naa_guard.targets.fluxlora`), and each layer's loaded update must equal the file's
for that layer, not merely be found somewhere. A file whose keys
show another architecture (an SD / SDXL / SD3 LoRA on Flux, a Flux LoRA on SD3 or SD) is refused
naming what it is (:func:`naa_guard.targets.fluxlora.refuse_other_architecture`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError

ADAPTER = "naa_guard_audit"
HOW = "Use the LoRA trained for this base pipeline (same UNet and text encoder layout), saved with save_lora_weights"


def _family(parts: dict[str, Any]) -> str:
    """Return the pipeline family the components make: 'flux', 'sd3' or 'sd' (SD 1.x / 2.x and SDXL)."""
    if "transformer" not in parts:
        return "sd"
    return "flux" if type(parts["transformer"]).__name__ == "FluxTransformer2DModel" else "sd3"


def _pipeline(parts: dict[str, Any], scheduler: Any) -> Any:
    """Return a diffusers pipeline over the loaded components (only to call its LoRA loader)."""
    import warnings

    import diffusers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scheduler-config deprecation notes: not the audit's business
        if _family(parts) == "flux":  # its loader: LoRAs into the transformer and the CLIP text_encoder (never the T5)
            return diffusers.FluxPipeline(scheduler=scheduler, **parts)
        if "transformer" in parts:  # SD3 (flow matching): its LoRA loader, without T5 (a T5 takes no LoRA here)
            t5 = {name: parts.get(name) for name in ("text_encoder_3", "tokenizer_3")}
            others = {name: part for name, part in parts.items() if name not in t5}
            return diffusers.StableDiffusion3Pipeline(scheduler=scheduler, **others, **t5)
        if "text_encoder_2" in parts:
            return diffusers.StableDiffusionXLPipeline(scheduler=scheduler, add_watermarker=False, **parts)
        return diffusers.StableDiffusionPipeline(scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **parts)


def _fingerprint(tensor: Any) -> tuple[tuple[int, ...], str]:
    import torch

    values = tensor.detach().to("cpu", torch.float32).contiguous()
    return tuple(values.shape), hashlib.sha256(values.numpy().tobytes()).hexdigest()


def _file_tensors(file: Path, allow_pickle: bool) -> tuple[dict[str, Any], dict[str, str] | None]:
    """Return the LoRA file's tensors and its safetensors header metadata; a pickle file only when the policy allows it."""
    if file.suffix != ".safetensors":
        if not allow_pickle:
            raise TargetError(
                f"model.lora {file}: a pickle file; loading one can run arbitrary code, so naa-guard refuses it. "
                f"Save the LoRA as .safetensors (save_lora_weights(..., safe_serialization=True)), or set model.allow_pickle: true if you trust it."
            )
        import torch

        from naa_guard.targets.modelcheck import pickle_load_error

        try:
            return dict(torch.load(file, map_location="cpu", weights_only=True)), None
        except Exception as exc:  # torch raises many types for a refused or damaged pickle
            raise pickle_load_error(file, exc, "model.lora ") from None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(file, framework="pt") as handle:
            metadata = handle.metadata()
        return load_file(file), metadata
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise TargetError(f"model.lora {file}: cannot read this safetensors file ({exc}). Restore or re-save it.") from None


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (?P<layer>\S+?): copying a param with shape torch\.Size\(\[(?P<file>[\d, ]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[(?P<model>[\d, ]*)\]\)"
)


def _shape_mismatches(message: str, tensors: dict[str, Any]) -> list[str]:
    """Return one line per size mismatch torch reported while loading the adapter: the file's tensor, its shape and the layer's."""
    lines = []
    for found in _SIZE_MISMATCH.finditer(message):
        file_shape = tuple(int(n) for n in found["file"].replace(" ", "").split(",") if n)
        model_shape = "x".join(n.strip() for n in found["model"].split(","))
        layer = found["layer"].replace(f".{ADAPTER}", "")
        module, _, kind = layer.partition(".lora_")
        # the file names the layer its own way (diffusers, peft or kohya): find it by module path, side and shape
        side = ("lora_a", "lora.down", "lora_down", "_lora.down") if kind.startswith("A") else ("lora_b", "lora.up", "lora_up", "_lora.up")
        flat = module.replace(".", "_")
        named = [
            name for name, tensor in tensors.items()
            if tuple(tensor.shape) == file_shape and flat in name.replace(".", "_") and any(s in name.lower() for s in side)
        ]  # fmt: skip
        where = named[0] if len(named) == 1 else f"the tensor for layer {layer}"
        lines.append(f"{where} is {'x'.join(map(str, file_shape))} in the file, but the layer {module} takes {model_shape}")
    return lines


def apply_lora(parts: dict[str, Any], scheduler: Any, file: Path, scale: float, *, allow_pickle: bool) -> None:
    """Return None after loading the LoRA into ``parts`` (UNet, text encoders) at ``scale``, checked to apply fully."""
    from naa_guard.targets.fluxlora import FLUX_LAYOUTS, check_no_t5_keys, flux_targets, refuse_other_architecture
    from naa_guard.targets.loralayers import check_loaded_layers, check_scale, diffusers_targets, expected_layers, sd_targets
    from naa_guard.targets.lorastrength import check_scalings, declared_scalings, loaded_scalings

    everything, metadata = _file_tensors(file, allow_pickle)
    tensors = {name: tensor for name, tensor in everything.items() if "lora" in name and not name.endswith("alpha")}
    if not tensors:
        raise TargetError(f"model.lora {file}: the file holds no LoRA tensors (no key contains 'lora'). {HOW}.")
    family = _family(parts)
    refuse_other_architecture(list(everything), family, file)
    declared = declared_scalings(everything, file, metadata)
    expected, layers = None, None
    if family == "flux":
        check_no_t5_keys(list(everything), file)
        expected = expected_layers(everything, declared, parts, file, flux_targets, FLUX_LAYOUTS)
    elif family == "sd3":  # diffusers' SD3 loader converts no layout: every key is <component>.<layer>
        expected = expected_layers(everything, declared, parts, file, lambda module: diffusers_targets(module, ("transformer", "text_encoder", "text_encoder_2")))
    else:  # SD / SDXL: layer by layer where every module names a linear layer the way diffusers does; else the value checks below alone
        try:
            layers = expected_layers(everything, declared, parts, file, sd_targets)
        except TargetError:
            layers = None  # SDXL's original (input_blocks) names, conv layers, attention-processor names: diffusers converts these
    pipeline = _pipeline(parts, scheduler)
    try:
        pipeline.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=ADAPTER, local_files_only=True, use_safetensors=file.suffix == ".safetensors")
    except AssertionError as exc:  # diffusers' kohya Flux converter asserts Flux.1's widths (3072 / 12288) for single blocks' linear1
        raise TargetError(
            f"model.lora {file}: diffusers could not convert this LoRA's layout for this pipeline (AssertionError{f': {exc}' if str(exc) else ''}; its kohya "
            f"converter assumes Flux.1's widths, 3072 / 12288, for single blocks' linear1). Re-save the LoRA in the diffusers layout (save_lora_weights), or use the base it was trained for."
        ) from None
    except (ValueError, RuntimeError, KeyError, OSError, AttributeError) as exc:
        mismatches = _shape_mismatches(str(exc), tensors)
        if mismatches:
            shown = "; ".join(mismatches[:3]) + (f" (and {len(mismatches) - 3} more)" if len(mismatches) > 3 else "")
            raise TargetError(
                f"model.lora {file}: {len(mismatches)} of the LoRA's tensors have other shapes than the layers they belong to: "
                f"{shown}. The LoRA was trained for another base (SD 1.x, SD 2.x and SDXL differ in attention and text "
                f"widths). {HOW}."
            ) from None
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300]
        raise TargetError(f"model.lora {file}: the LoRA does not fit this pipeline ({type(exc).__name__}: {detail}). {HOW}.") from None
    if expected is not None:  # Flux and SD3: the loaded update of every layer is the file's, then the scale moves each by model.lora_scale
        before = check_loaded_layers(parts, ADAPTER, expected, file)
        pipeline.set_adapters([ADAPTER], adapter_weights=[scale])
        check_scale(parts, ADAPTER, before, scale, file)
        return
    loaded = {
        _fingerprint(parameter)
        for component in (parts[name] for name in ("unet", "transformer", "text_encoder", "text_encoder_2") if name in parts)
        for name, parameter in component.named_parameters()
        if f".{ADAPTER}." in name
    }
    unmatched = sorted(name for name, tensor in tensors.items() if _fingerprint(tensor) not in loaded)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise TargetError(
            f"model.lora {file}: {len(unmatched)} of the LoRA's {len(tensors)} tensors match no layer of the UNet or "
            f"text encoders ({shown}); auditing without them would audit the base model, not the fine-tune. {HOW}."
        )
    pipeline.set_adapters([ADAPTER], adapter_weights=[scale])
    check_scalings(declared, loaded_scalings(parts, ADAPTER, _fingerprint), scale, file, _fingerprint)
    if layers is not None:
        check_loaded_layers(parts, ADAPTER, layers, file, scale=scale)  # and each value in its own layer, not only somewhere
