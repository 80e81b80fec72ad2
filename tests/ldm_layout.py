"""Write a diffusers Stable Diffusion 1.x folder as one checkpoint in the original (ldm / A1111) key layout.

For tests only: the inverse of diffusers' single-file conversion for the block layouts the tiny SD
fixture uses (written here from the layout's rules; the test checks it by converting back with
diffusers and comparing every tensor).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, pairs: tuple[tuple[str, str], ...]) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, object]) -> dict[str, torch.Tensor]:
    """Return a UNet2DConditionModel state dict under model.diffusion_model.* in the ldm layout."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    per = int(config["layers_per_block"]) + 1  # type: ignore[call-overload]
    up_attention = {i for i, kind in enumerate(config["up_block_types"]) if "CrossAttn" in kind}  # type: ignore[arg-type]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in top:
            name = top[key]
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            name = f"input_blocks.{1 + block * per + layer}." + ("0." + _rename(rest, _RESNET) if kind == "resnets" else "1." + rest)
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            name = f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"middle_block.{2 * int(m[1])}." + _rename(m[2], _RESNET)
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            name = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            name = f"output_blocks.{block * per + layer}." + ("0." + _rename(rest, _RESNET) if kind == "resnets" else "1." + rest)
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            block = int(m[1])
            name = f"output_blocks.{block * per + per - 1}.{2 if block in up_attention else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"no ldm name for UNet key {key}")
        out["model.diffusion_model." + name] = tensor
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, object]) -> dict[str, torch.Tensor]:
    """Return an AutoencoderKL state dict under first_stage_model.* in the ldm layout (attention as 1x1 convs)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    blocks = len(config["up_block_types"])  # type: ignore[arg-type]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in top:
            name = top[key]
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            name = f"encoder.down.{m[1]}.block.{m[2]}." + _rename(m[3], (("conv_shortcut", "nin_shortcut"),))
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            name = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            name = f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}." + _rename(m[3], (("conv_shortcut", "nin_shortcut"),))
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            name = f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}." + _rename(m[3], (("conv_shortcut", "nin_shortcut"),))
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
            name = f"{m[1]}.mid.attn_1." + _rename(m[2], _VAE_ATTENTION)
            if tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # the original layout stores them as 1x1 convolutions
        else:
            raise KeyError(f"no ldm name for VAE key {key}")
        out["first_stage_model." + name] = tensor
    return out


def write_ldm_checkpoint(pipeline: Path, target: Path) -> Path:
    """Write the SD 1.x pipeline folder's UNet, VAE and text encoder as one ldm-layout checkpoint (.safetensors or .ckpt)."""
    from safetensors.torch import save_file

    def part(name: str, file: str) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        return load_file(pipeline / name / file), json.loads((pipeline / name / "config.json").read_text())

    unet, unet_config = part("unet", "diffusion_pytorch_model.safetensors")
    vae, vae_config = part("vae", "diffusion_pytorch_model.safetensors")
    text, _ = part("text_encoder", "model.safetensors")
    state = {**unet_to_ldm(unet, unet_config), **vae_to_ldm(vae, vae_config)}
    state.update({"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in text.items()})
    state = {k: v.contiguous() for k, v in state.items()}
    if target.suffix == ".safetensors":
        save_file(state, target)
    else:
        torch.save({"state_dict": state}, target)
    return target
