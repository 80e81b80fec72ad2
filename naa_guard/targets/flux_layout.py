"""Flux's original (Black Forest Labs) transformer layout, as ``flux1-dev.safetensors`` ships it, converted to diffusers' names.

diffusers' ``convert_flux_transformer_checkpoint_to_diffusers`` reads this layout for the released
sizes only: it splits each single block's fused ``linear1`` at fixed widths (3072 x 3, 12288). The
rules here are the same layout read for any size: the split widths are the target module's own
(``to_q``, ``to_k``, ``to_v``, ``proj_mlp``), so a checkpoint of another size is converted, or refused
by the strict check, never cut at the wrong place. ``tests/test_flow_single_file.py`` checks that at
the released widths this conversion and diffusers' agree tensor for tensor.

Every tensor of the layout maps to exactly one converted tensor (or, for the fused ``qkv`` / ``linear1``,
to its parts); a name the layout does not know is returned as left over, and the caller refuses it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# name in the original layout -> diffusers name; the weight/bias suffix is kept
_TOP = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
}
_DOUBLE = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
}
_DOUBLE_NORMS = {
    "img_attn.norm.query_norm.scale": "attn.norm_q.weight",
    "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
    "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
    "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight",
}
_DOUBLE_QKV = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}
_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out"}
_SINGLE_NORMS = {"norm.query_norm.scale": "attn.norm_q.weight", "norm.key_norm.scale": "attn.norm_k.weight"}
_SINGLE_FUSED = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
_BLOCK = re.compile(r"^(double|single)_blocks\.(\d+)\.(.+)\.(weight|bias|scale)$")


def _swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """Return the final modulation with its (shift, scale) halves as diffusers' (scale, shift)."""
    import torch

    shift, scale = tensor.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def convert_flux_transformer(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, Any], list[str], list[str]]:
    """Return (converted tensors, left-over original names, fused tensors whose size does not split) for a BFL-layout Flux transformer.

    ``shapes`` are the target module's tensor shapes by diffusers name: they give the widths each fused
    tensor splits into. ``state``'s names carry no ``model.diffusion_model.`` prefix.
    """
    import torch

    out: dict[str, Any] = {}
    left: list[str] = []
    unsplit: list[str] = []
    for name, tensor in state.items():
        stem, _, suffix = name.rpartition(".")
        if stem in _TOP and suffix in ("weight", "bias"):
            out[f"{_TOP[stem]}.{suffix}"] = tensor
            continue
        if stem == "final_layer.adaLN_modulation.1" and suffix in ("weight", "bias"):
            out[f"norm_out.linear.{suffix}"] = _swap_halves(tensor)
            continue
        match = _BLOCK.match(name)
        if match is None:
            left.append(name)
            continue
        kind, index, inner, suffix = match[1], match[2], match[3], match[4]
        prefix = f"transformer_blocks.{index}." if kind == "double" else f"single_transformer_blocks.{index}."
        renames, norms = (_DOUBLE, _DOUBLE_NORMS) if kind == "double" else (_SINGLE, _SINGLE_NORMS)
        if suffix == "scale" and f"{inner}.scale" in norms:
            out[prefix + norms[f"{inner}.scale"]] = tensor
        elif suffix != "scale" and inner in renames:
            out[f"{prefix}{renames[inner]}.{suffix}"] = tensor
        elif suffix != "scale" and (kind == "double" and inner in _DOUBLE_QKV or kind == "single" and inner == "linear1"):
            parts = _DOUBLE_QKV[inner] if kind == "double" else _SINGLE_FUSED
            widths = [shapes.get(f"{prefix}{part}.{suffix}", (0,))[0] for part in parts]
            if 0 in widths or sum(widths) != tensor.shape[0]:
                unsplit.append(f"{name} {tuple(tensor.shape)} (expected {' + '.join(map(str, widths))} rows)")
                continue
            for part, piece in zip(parts, torch.split(tensor, widths, dim=0)):
                out[f"{prefix}{part}.{suffix}"] = piece.contiguous()
        else:
            left.append(name)
    return out, left, unsplit
