"""A latent text-to-image pipeline folder (SD 1.x / 2.x, SDXL) read without loading it: its
components, geometry, text width and LoRA file, checked before any weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import PICKLE_SUFFIXES, read_json
from naa_guard.targets.variants import component_files
from naa_guard.userfiles import entry_problem

if TYPE_CHECKING:
    pass


TEXT_WEIGHTS = ("model.safetensors", "model.fp16.safetensors")


TEXT_ENCODER_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection")


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


EXTRA_HINT = 'install them with pip install "naa-guard[sd]"'


@dataclass(frozen=True)
class LatentModelInfo:
    """What can be read from a latent pipeline folder without loading its weights."""

    root: Path
    components: dict[str, Path]  # vae, unet, scheduler, text_encoder, tokenizer (+ text_encoder_2, tokenizer_2)
    unet_config: dict[str, Any]
    vae_config: dict[str, Any]
    sample_size: int  # image side the VAE takes: unet.sample_size * vae_scale_factor
    in_channels: int  # image channels the VAE takes
    lora: Path | None = None  # the LoRA weight file
    lora_scale: float = 1.0
    variant: str | None = None  # model.variant: the precision variant whose weight files load
    takes_text = True  # the data loader's captions condition this model

    @property
    def sdxl(self) -> bool:
        """Return True for a two-text-encoder (SDXL) pipeline."""
        return "text_encoder_2" in self.components

    @property
    def unet_dir(self) -> Path:
        """Return the UNet's folder (named in messages)."""
        return self.components["unet"]

    def identity_files(self) -> list[Path]:
        """Return the files whose content identifies this model: every component's files and the LoRA."""
        files = [p for name, folder in self.components.items() for p in component_files(folder, self.variant, name)]
        return files + ([self.lora] if self.lora is not None else [])

    def encoder_files(self) -> list[Path]:
        """Return the files the encodings depend on: the VAE, text encoders and tokenizers, and the LoRA (it may touch the text encoders)."""
        files = [p for name, folder in self.components.items() if name not in ("unet", "scheduler") for p in component_files(folder, self.variant, name)]
        return files + ([self.lora] if self.lora is not None else [])

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: the LoRA scale."""
        return {"lora_scale": self.lora_scale if self.lora is not None else None}

    def size_source(self) -> str:
        """Return where the pipeline's image size comes from, and whether the VAE's own config disagrees."""
        factor = 2 ** (len(self.vae_config.get("block_out_channels") or [64]) - 1)
        vae_file = self.components["vae"] / "config.json"
        text = f"sample_size {self.sample_size // factor} in {self.unet_dir / 'config.json'} x the VAE's scale factor {factor} ({vae_file} block_out_channels)"
        vae_size = self.vae_config.get("sample_size")
        if isinstance(vae_size, int) and not isinstance(vae_size, bool) and vae_size != self.sample_size:
            text += f"; the VAE's own config says sample_size {vae_size}, so the configs disagree and one of them is wrong"
        return text


def read_latent_info(root: Path, unet_subfolder: str | None, *, sdxl: bool, lora: Path | None, lora_scale: float, variant: str | None = None) -> LatentModelInfo:
    """Return a latent pipeline folder's components and image geometry, without importing torch."""
    names = ["vae", "unet", "scheduler", "text_encoder", "tokenizer"] + (["text_encoder_2", "tokenizer_2"] if sdxl else [])
    folders = {name: root / ((unet_subfolder or "unet") if name == "unet" else name) for name in names}
    missing = [f"{folder.name}/" for folder in folders.values() if not folder.is_dir()]
    if missing:
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise TargetError(
            f"{root}: this latent text-to-image pipeline is missing {', '.join(missing)} (found: "
            f"{', '.join(present) or 'no subfolders'}). A {'SDXL' if sdxl else 'Stable Diffusion'} folder needs "
            f"{', '.join(f'{name}/' for name in names)}; save the whole pipeline with save_pretrained."
        )
    for name in ("vae", "unet", "text_encoder") + (("text_encoder_2",) if sdxl else ()):
        if not (folders[name] / "config.json").is_file():
            raise TargetError(f"{folders[name]}: no config.json. Save this component with save_pretrained.")
    if not (folders["scheduler"] / "scheduler_config.json").is_file():
        raise TargetError(f"{folders['scheduler']}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    from naa_guard.targets.modelcheck import check_unet_config

    unet_file, vae_file = folders["unet"] / "config.json", folders["vae"] / "config.json"
    unet_config, vae_config = read_json(unet_file), read_json(vae_file)
    if unet_config.get("_class_name") != "UNet2DConditionModel":
        raise TargetError(f"{unet_file}: UNet class {unet_config.get('_class_name')!r}; a latent text-to-image pipeline needs a UNet2DConditionModel.")
    if vae_config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise TargetError(f"{vae_file}: VAE class {vae_config.get('_class_name')!r} is not supported; naa-guard encodes with an AutoencoderKL.")
    if vae_config.get("latents_mean") is not None or vae_config.get("latents_std") is not None:
        raise TargetError(f"{vae_file}: this VAE normalises latents per channel (latents_mean / latents_std), which naa-guard does not apply yet; refusing rather than encoding differently from training.")
    latent_size, latent_channels = check_unet_config(unet_config, unet_file)
    _, image_channels = check_unet_config({"sample_size": 1, **vae_config}, vae_file)
    blocks = vae_config.get("block_out_channels") or [64]
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    if latent_channels != vae_config.get("latent_channels", 4) or unet_config.get("out_channels", latent_channels) != latent_channels:
        raise TargetError(
            f"{unet_file}: in_channels {latent_channels} / out_channels {unet_config.get('out_channels')} do not match the VAE's "
            f"latent_channels {vae_config.get('latent_channels', 4)}; inpainting and depth UNets (extra input channels) are not supported."
        )
    if sdxl and unet_config.get("addition_embed_type") != "text_time":
        raise TargetError(f"{unet_file}: an SDXL pipeline's UNet needs addition_embed_type 'text_time' (found {unet_config.get('addition_embed_type')!r}).")
    _check_text_width(unet_config, unet_file, folders, sdxl)
    for tokenizer in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        if not any(folders[tokenizer].glob("*.json")):
            raise TargetError(f"{folders[tokenizer]}: no tokenizer files (tokenizer_config.json, vocab.json, ...). Save the tokenizer with save_pretrained.")
    return LatentModelInfo(root, folders, unet_config, vae_config, latent_size * 2 ** (len(blocks) - 1), image_channels, find_lora(lora), lora_scale, variant)


def _check_text_width(unet_config: dict[str, Any], unet_file: Path, folders: dict[str, Path], sdxl: bool) -> None:
    """Return None; raise TargetError when the UNet's cross-attention cannot read the text encoders' hidden states.

    Without this, the first UNet call fails deep inside torch ("mat1 and mat2 shapes cannot be
    multiplied"), which reads like a broken image geometry.
    """
    widths = {}
    for name in ("text_encoder", "text_encoder_2") if sdxl else ("text_encoder",):
        width = read_json(folders[name] / "config.json").get("hidden_size")
        if not isinstance(width, int) or isinstance(width, bool):
            return  # transformers' default applies; the strict weight check of the text encoder settles it
        widths[name] = width
    text_width = sum(widths.values())
    key = "encoder_hid_dim" if unet_config.get("encoder_hid_dim") is not None else "cross_attention_dim"
    declared = unet_config.get(key, 1280)  # 1280: UNet2DConditionModel's default
    wanted = declared if isinstance(declared, list) else [declared]
    if all(width == text_width for width in wanted):
        return
    encoders = " + ".join(f"{widths[name]} ({folders[name] / 'config.json'} hidden_size)" for name in widths)
    raise TargetError(
        f"{unet_file}: {key} is {declared!r}, but the text {'encoders give' if sdxl else 'encoder gives'} hidden states "
        f"{text_width} wide: {encoders}. Every cross-attention layer of the UNet reads those states, so the widths must be "
        f"equal (SD 1.x: 768, SD 2.x: 1024, SDXL: 768 + 1280 = 2048). The UNet and the text encoder come from different "
        f"pipelines: put the text encoder the UNet was trained with into the pipeline folder."
    )


def find_lora(lora: Path | None) -> Path | None:
    """Return the LoRA weight file named by ``model.lora`` (a file, or a folder written by save_lora_weights)."""
    if lora is None:
        return None
    path = Path(lora)
    if path.is_dir():
        candidates = [path / LORA_WEIGHTS] if (path / LORA_WEIGHTS).is_file() else sorted(p for p in path.iterdir() if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES)
        if len(candidates) != 1:
            raise TargetError(
                f"model.lora {path}: expected one LoRA weight file ({LORA_WEIGHTS}, as save_lora_weights writes), "
                f"found {', '.join(p.name for p in candidates) or 'none'}. Point model.lora at the file itself."
            )
        path = candidates[0]
    problem = entry_problem(path)
    if problem is not None:
        raise TargetError(f"model.lora {path} {problem}. Point it at the .safetensors file save_lora_weights wrote.")
    if not path.is_file():
        raise TargetError(f"model.lora {path}: no such file or folder. Point it at the .safetensors file save_lora_weights wrote (relative to the policy file).")
    return path
