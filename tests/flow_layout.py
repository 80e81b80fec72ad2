"""Write a tiny SD3 / Flux pipeline folder as one checkpoint in the original layouts (SD3's ``joint_blocks``, Flux's BFL ``double_blocks``).

For tests only: the inverse of diffusers' single-file conversion, written from the layouts' rules for the
block kinds the tiny fixtures use (one block; SD3's last block is context-pre-only). The VAE goes through
``ldm_layout.vae_to_ldm``; the text encoders keep their transformers names under ``text_encoders.*.transformer.``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ldm_layout import vae_to_ldm
from safetensors.torch import load_file, save_file


def _swap(tensor: torch.Tensor) -> torch.Tensor:
    a, b = tensor.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return an SD3Transformer2DModel state dict (one context-pre-only block) in SD3's original layout, unprefixed."""
    out = {"pos_embed": state["pos_embed.pos_embed"], "final_layer.adaLN_modulation.1.weight": _swap(state["norm_out.linear.weight"])}
    out["final_layer.adaLN_modulation.1.bias"] = _swap(state["norm_out.linear.bias"])
    names = {
        "pos_embed.proj": "x_embedder.proj", "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2", "context_embedder": "context_embedder",
        "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0", "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
        "proj_out": "final_layer.linear", "transformer_blocks.0.attn.to_out.0": "joint_blocks.0.x_block.attn.proj",
        "transformer_blocks.0.norm1.linear": "joint_blocks.0.x_block.adaLN_modulation.1",
        "transformer_blocks.0.ff.net.0.proj": "joint_blocks.0.x_block.mlp.fc1", "transformer_blocks.0.ff.net.2": "joint_blocks.0.x_block.mlp.fc2",
    }  # fmt: skip
    for suffix in ("weight", "bias"):
        for new, old in names.items():
            out[f"{old}.{suffix}"] = state[f"{new}.{suffix}"]
        block = "transformer_blocks.0."
        out[f"joint_blocks.0.x_block.attn.qkv.{suffix}"] = torch.cat([state[f"{block}attn.to_{p}.{suffix}"] for p in "qkv"])
        out[f"joint_blocks.0.context_block.attn.qkv.{suffix}"] = torch.cat([state[f"{block}attn.add_{p}_proj.{suffix}"] for p in "qkv"])
        out[f"joint_blocks.0.context_block.adaLN_modulation.1.{suffix}"] = _swap(state[f"{block}norm1_context.linear.{suffix}"])
    return out


def flux_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a FluxTransformer2DModel state dict (one double, one single block) in Black Forest Labs' layout, unprefixed."""
    names = {
        "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer", "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
        "time_text_embed.text_embedder.linear_1": "vector_in.in_layer", "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
        "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer", "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
        "context_embedder": "txt_in", "x_embedder": "img_in", "proj_out": "final_layer.linear",
        "transformer_blocks.0.norm1.linear": "double_blocks.0.img_mod.lin", "transformer_blocks.0.norm1_context.linear": "double_blocks.0.txt_mod.lin",
        "transformer_blocks.0.ff.net.0.proj": "double_blocks.0.img_mlp.0", "transformer_blocks.0.ff.net.2": "double_blocks.0.img_mlp.2",
        "transformer_blocks.0.ff_context.net.0.proj": "double_blocks.0.txt_mlp.0", "transformer_blocks.0.ff_context.net.2": "double_blocks.0.txt_mlp.2",
        "transformer_blocks.0.attn.to_out.0": "double_blocks.0.img_attn.proj", "transformer_blocks.0.attn.to_add_out": "double_blocks.0.txt_attn.proj",
        "single_transformer_blocks.0.norm.linear": "single_blocks.0.modulation.lin", "single_transformer_blocks.0.proj_out": "single_blocks.0.linear2",
    }  # fmt: skip
    norms = {
        "transformer_blocks.0.attn.norm_q": "double_blocks.0.img_attn.norm.query_norm", "transformer_blocks.0.attn.norm_k": "double_blocks.0.img_attn.norm.key_norm",
        "transformer_blocks.0.attn.norm_added_q": "double_blocks.0.txt_attn.norm.query_norm", "transformer_blocks.0.attn.norm_added_k": "double_blocks.0.txt_attn.norm.key_norm",
        "single_transformer_blocks.0.attn.norm_q": "single_blocks.0.norm.query_norm", "single_transformer_blocks.0.attn.norm_k": "single_blocks.0.norm.key_norm",
    }  # fmt: skip
    out = {f"{old}.scale": state[f"{new}.weight"] for new, old in norms.items()}
    for suffix in ("weight", "bias"):
        for new, old in names.items():
            if f"{new}.{suffix}" in state:
                out[f"{old}.{suffix}"] = state[f"{new}.{suffix}"]
        out[f"final_layer.adaLN_modulation.1.{suffix}"] = _swap(state[f"norm_out.linear.{suffix}"])
        out[f"double_blocks.0.img_attn.qkv.{suffix}"] = torch.cat([state[f"transformer_blocks.0.attn.to_{p}.{suffix}"] for p in "qkv"])
        out[f"double_blocks.0.txt_attn.qkv.{suffix}"] = torch.cat([state[f"transformer_blocks.0.attn.add_{p}_proj.{suffix}"] for p in "qkv"])
        single = "single_transformer_blocks.0."
        out[f"single_blocks.0.linear1.{suffix}"] = torch.cat([state[f"{single}attn.to_{p}.{suffix}"] for p in "qkv"] + [state[f"{single}proj_mlp.{suffix}"]])
    return out


def write_flow_checkpoint(pipeline: Path, target: Path, family: str, *, parts: tuple[str, ...] = ("transformer", "vae", "text")) -> Path:
    """Write the tiny SD3 / Flux folder's components as one original-layout checkpoint: all in one (prefixed), or ``parts=("transformer",)`` alone, unprefixed."""
    transformer = load_file(pipeline / "transformer" / "diffusion_pytorch_model.safetensors")
    original = sd3_to_original(transformer) if family == "sd3" else flux_to_original(transformer)
    if parts == ("transformer",):
        state = original
    else:
        state = {"model.diffusion_model." + k: v for k, v in original.items()}
    if "vae" in parts:
        config = json.loads((pipeline / "vae" / "config.json").read_text())
        state.update(vae_to_ldm(load_file(pipeline / "vae" / "diffusion_pytorch_model.safetensors"), config))
    if "text" in parts:
        encoders = {"text_encoder": "clip_l", "text_encoder_2": "clip_g", "text_encoder_3": "t5xxl"} if family == "sd3" else {"text_encoder": "clip_l", "text_encoder_2": "t5xxl"}
        for folder, name in encoders.items():
            if not (pipeline / folder).is_dir():
                continue
            tensors = load_file(pipeline / folder / "model.safetensors")
            if name == "clip_l" and family == "sd3":
                tensors.pop("text_projection.weight")  # SD3's original CLIP-L has none: the loader uses the identity
            prefix = f"text_encoders.{name}.transformer."
            state.update({prefix + (k if k.startswith(("text_model.", "text_projection", "shared", "encoder.")) else "text_model." + k): v for k, v in tensors.items()})
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    return target
