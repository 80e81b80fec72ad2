"""Flux LoRA files: which layer of the FluxPipeline each module of the file names, and what a file is for.

diffusers 0.42's ``FluxPipeline.load_lora_weights`` reads three key layouts (``FluxLoraLoaderMixin.lora_state_dict``):

- diffusers / peft, as ``FluxPipeline.save_lora_weights`` writes it and ai-toolkit saves it:
  ``transformer.<module>.lora_A.weight`` / ``lora_B.weight`` (optionally ``<module>.alpha``), and
  ``text_encoder.<module>...`` for the CLIP encoder;
- kohya (sd-scripts): ``lora_unet_double_blocks_<i>_<part>`` / ``lora_unet_single_blocks_<i>_<part>``
  (BFL's original module names) and ``lora_te1_<module>`` with ``lora_down`` / ``lora_up`` and a
  ``.alpha`` per module; the fused projections (``img_attn_qkv``, ``txt_attn_qkv``, single blocks'
  ``linear1``) are split into q, k, v (and the MLP input) and alpha / rank is folded into the weights;
- ComfyUI: the kohya layout under ``diffusion_model.`` (dots for underscores).

This module maps a file's module name to the diffusers layer(s) it updates, from its own table of
the Flux architecture (not diffusers' converter), so the loaded adapter can be checked layer by
layer against the file (:mod:`naa_guard.targets.loralayers`). T5 (``text_encoder_2``) takes no
LoRA in diffusers' Flux loader: a file with T5 keys is refused rather than loaded without them.
"""

from __future__ import annotations

import re

from naa_guard.errors import TargetError
from naa_guard.targets.loralayers import LayerTarget, diffusers_targets

# kohya's double-block parts -> the FluxTransformerBlock layers (a fused qkv projection is split in this order)
_DOUBLE = {
    "img_attn_proj": ("attn.to_out.0",),
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_mlp_0": ("ff.net.0.proj",),
    "img_mlp_2": ("ff.net.2",),
    "img_mod_lin": ("norm1.linear",),
    "txt_attn_proj": ("attn.to_add_out",),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_mlp_0": ("ff_context.net.0.proj",),
    "txt_mlp_2": ("ff_context.net.2",),
    "txt_mod_lin": ("norm1_context.linear",),
}
_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation_lin": ("norm.linear",),
}
_GLOBAL = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer_linear": "proj_out",
    "final_layer_adaLN_modulation_1": "norm_out.linear",  # BFL orders (shift, scale), diffusers (scale, shift)
}
_BLOCK = re.compile(r"^(?P<kind>double|single)_blocks_(?P<index>\d+)_(?P<part>.+)$")


FLUX_LAYOUTS = (
    "diffusers / peft keys (transformer.<layer>.lora_A.weight / lora_B.weight, text_encoder.<layer>...), kohya keys "
    "(lora_unet_double_blocks_*, lora_unet_single_blocks_*, lora_te1_*, with lora_down / lora_up and .alpha), or their ComfyUI spelling (diffusion_model.*)"
)


def describe_lora(names: list[str]) -> str | None:
    """Return what a LoRA file is for, read from its key names ('a Flux LoRA', 'an SDXL LoRA', ...); None when they do not tell."""
    def has(*marks: str) -> bool:
        return any(mark in name for name in names for mark in marks)

    if has("lora_unet_double_blocks_", "lora_unet_single_blocks_", "single_transformer_blocks.", "diffusion_model.double_blocks", "diffusion_model.single_blocks", "guidance_embedder", "lora_transformer_single_transformer_blocks"):
        return "a Flux LoRA"
    if has("lora_unet_joint_blocks_", "joint_blocks.") or (has("transformer.transformer_blocks.") and has("text_encoder_2.", "pos_embed")):
        return "an SD3 LoRA"
    unet = any(name.startswith("unet.") for name in names) or has("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block", "lora_unet_input_blocks", "lora_unet_output_blocks", "lora_unet_middle_block")
    if unet:
        sdxl = has("lora_te2_", "text_encoder_2.", "add_embedding", "lora_unet_input_blocks_4_1_transformer_blocks_1", "down_blocks.1.attentions.0.transformer_blocks.1")
        return "an SDXL LoRA (a UNet and two CLIP encoders)" if sdxl else "a Stable Diffusion UNet LoRA (SD 1.x / 2.x or SDXL)"
    return None


def refuse_other_architecture(names: list[str], pipeline: str, file: object) -> None:
    """Return None; raise TargetError when the file's keys show a LoRA for another architecture than ``pipeline``."""
    kind = describe_lora(names)
    fits = {"flux": ("a Flux LoRA",), "sd3": ("an SD3 LoRA",), "sd": ("an SDXL LoRA (a UNet and two CLIP encoders)", "a Stable Diffusion UNet LoRA (SD 1.x / 2.x or SDXL)")}
    if kind is None or kind in fits[pipeline]:
        return
    marker = next((name for name in sorted(names) if "lora" in name), names[0] if names else "")
    label = {"flux": "a Flux pipeline (FluxTransformer2DModel)", "sd3": "an SD3 pipeline (SD3Transformer2DModel)", "sd": "a Stable Diffusion / SDXL pipeline (UNet)"}[pipeline]
    raise TargetError(
        f"model.lora {file}: this file is {kind} (keys such as {marker}), but model.path is {label}. A LoRA only applies to "
        f"the architecture it was trained on. Point model.path at the LoRA's base pipeline, or model.lora at a LoRA trained for this one."
    )


def flux_targets(module: str) -> list[LayerTarget] | None:
    """Return the Flux layers a file module updates (several for a fused projection); None for a name of no known layout."""
    if module.startswith("diffusion_model."):  # ComfyUI: the kohya names under another prefix
        module = "lora_unet_" + module.removeprefix("diffusion_model.").replace(".", "_")
    elif module.startswith("text_encoders.clip_l.transformer."):
        module = "lora_te_" + module.removeprefix("text_encoders.clip_l.transformer.").replace(".", "_")
    if module.startswith(("transformer.", "text_encoder.")):
        return diffusers_targets(module, ("transformer", "text_encoder"))
    if module.startswith(("lora_te1_", "lora_te_")):
        return [LayerTarget("text_encoder", "flat:" + module.removeprefix("lora_te1_").removeprefix("lora_te_"))]
    if not module.startswith("lora_unet_"):
        return None
    name = module.removeprefix("lora_unet_")
    block = _BLOCK.match(name)
    if block is not None:
        table, prefix = (_DOUBLE, "transformer_blocks") if block["kind"] == "double" else (_SINGLE, "single_transformer_blocks")
        layers = table.get(block["part"])
        return None if layers is None else [LayerTarget("transformer", f"{prefix}.{block['index']}.{layer}") for layer in layers]
    if name in _GLOBAL:
        return [LayerTarget("transformer", _GLOBAL[name], swap_halves=name == "final_layer_adaLN_modulation_1")]
    return None


def check_no_t5_keys(names: list[str], file: object) -> None:
    """Return None; raise TargetError when the file holds LoRA weights for Flux's T5 (diffusers' Flux loader drops them)."""
    t5 = sorted(name for name in names if name.startswith(("text_encoder_2.", "lora_te2_", "text_encoders.t5xxl.")))
    if t5:
        raise TargetError(
            f"model.lora {file}: {len(t5)} tensor(s) of the file are for text_encoder_2 ({t5[0]}, ...), which in a Flux pipeline is "
            f"the T5 encoder; diffusers' FluxPipeline loads LoRAs into the transformer and the CLIP text_encoder only, so these "
            f"would be dropped and the audit would score another model. If this is an SD3 / SDXL LoRA, point model.path at its "
            f"base pipeline; otherwise merge the T5 LoRA into the T5 weights and save the pipeline with save_pretrained."
        )
