"""A PixArt-Sigma / PixArt-Alpha pipeline folder read without loading it: a DiT trained by DDPM noise prediction.

PixArt denoises VAE latents with a ``PixArtTransformer2DModel`` conditioned on T5 hidden states
(with their attention mask), on the DDPM schedule of its scheduler config, predicting the noise
(epsilon; the released models' ``out_channels = 2 * in_channels`` add a learned variance, whose
first half is the noise, as the pipeline splits it). So it is a latent target of the UNet families
(SPEC section 3), the attacks unchanged; only the denoiser's call differs
(:mod:`~naa_guard.targets.pixart`). The folder's configs are checked to agree here, before any
weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.targets.pipelinefolders import pipeline_folders
from naa_guard.targets.base import read_json
from naa_guard.targets.latent_info import LatentModelInfo

PIXART_SIGMA = "PixArtSigmaPipeline"
PIXART_ALPHA = "PixArtAlphaPipeline"
# The pipelines' max_sequence_length defaults: T5 tokens per caption, padded, with the attention mask.
PIXART_TOKENS = {PIXART_SIGMA: 300, PIXART_ALPHA: 120}
PIXART_TRANSFORMER = "PixArtTransformer2DModel"
T5_ENCODER = "T5EncoderModel"
# Alpha's pipeline gives the transformer resolution / aspect ratio only at this sample_size (1024 px models).
ALPHA_CONDITIONED_SIZE = 128
PREDICTIONS = ("epsilon", "v_prediction", "sample")
NAMES = ["vae", "transformer", "scheduler", "text_encoder", "tokenizer"]


@dataclass(frozen=True)
class PixArtModelInfo(LatentModelInfo):
    """What can be read from a PixArt pipeline folder; ``unet_config`` holds the transformer's config."""

    family: str = "pixart"
    pipeline: str = PIXART_SIGMA
    prediction_type: str = "epsilon"

    @property
    def unet_dir(self) -> Path:
        """Return the transformer's folder (named in messages)."""
        return self.components["transformer"]

    @property
    def max_sequence_length(self) -> int:
        """Return the T5 tokens per caption the pipeline encodes (Sigma 300, Alpha 120)."""
        return PIXART_TOKENS[self.pipeline]

    @property
    def size_conditioned(self) -> bool:
        """Return whether the pipeline feeds the transformer the resolution and aspect ratio (Alpha at sample_size 128)."""
        return self.pipeline == PIXART_ALPHA and self.unet_config.get("sample_size") == ALPHA_CONDITIONED_SIZE

    def encoder_files(self) -> list[Path]:
        """Return the files the encodings depend on: the VAE, the T5 encoder and its tokenizer."""
        encoders = [folder for name, folder in self.components.items() if name not in ("transformer", "scheduler")]
        return [p for folder in encoders for p in sorted(folder.iterdir()) if p.is_file()]

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: the family and how its transformer is called."""
        return {"lora_scale": None, "family": self.family, "parametrization": self.parametrization()}

    def parametrization(self) -> str:
        """Return the parametrization the reports state (the UNet families' DDPM reading, PixArt's call)."""
        sigma = int(self.unet_config.get("out_channels") or 0) == 2 * int(self.unet_config.get("in_channels") or 0)
        return (
            f"DDPM {self.prediction_type} prediction on the scheduler's alphas_cumprod, integer timestep t; "
            f"pixart ({self.pipeline}): T5 condition with attention mask, {self.max_sequence_length} tokens, lower-cased captions"
            + ("; learned-sigma output, first half is the prediction" if sigma else "")
            + ("; resolution / aspect ratio input" if self.size_conditioned else "")
        )


def _int(config: dict[str, Any], key: str, file: Path, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TargetError(f"{file}: {key} is {value!r}; expected a positive int. Re-save the transformer with save_pretrained.")
    return value


def read_pixart_info(root: Path, index: dict[str, Any], *, lora: Path | None, pipeline: str) -> PixArtModelInfo:
    """Return a PixArt pipeline folder's components and geometry after checking its configs agree."""
    from naa_guard.targets.modelcheck import check_scheduler_config

    if lora is not None:
        raise TargetError(f"{root}: model.lora on a {pipeline} is not audited yet (naa-guard issue 26); remove model.lora, or fuse the LoRA into the transformer and save the pipeline with save_pretrained.")
    folders = pipeline_folders(root, NAMES, pipeline)
    if not any(folders["tokenizer"].glob("*.json")):
        raise TargetError(f"{folders['tokenizer']}: no tokenizer files (tokenizer_config.json, tokenizer.json, ...). Save the tokenizer with save_pretrained.")
    scheduler_file = folders["scheduler"] / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise TargetError(f"{folders['scheduler']}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    scheduler = read_json(scheduler_file)
    prediction = scheduler.get("prediction_type", "epsilon")
    if "FlowMatch" in str(scheduler.get("_class_name")) or prediction not in PREDICTIONS or scheduler.get("use_flow_sigmas"):
        raise TargetError(
            f"{scheduler_file}: scheduler {scheduler.get('_class_name')!r} with prediction_type {prediction!r}; a {pipeline} is read as a DDPM "
            f"noise-prediction model ({', '.join(PREDICTIONS)} on the scheduler's alphas_cumprod, no use_flow_sigmas). A flow-matching PixArt is not audited."
        )
    check_scheduler_config(scheduler, scheduler_file)
    transformer_file, vae_file = folders["transformer"] / "config.json", folders["vae"] / "config.json"
    config, vae_config = read_json(transformer_file), read_json(vae_file)
    if config.get("_class_name") != PIXART_TRANSFORMER:
        raise TargetError(f"{transformer_file}: transformer class {config.get('_class_name')!r}; a {pipeline} needs a {PIXART_TRANSFORMER}.")
    if vae_config.get("_class_name", "AutoencoderKL") != "AutoencoderKL" or vae_config.get("latents_mean") is not None or vae_config.get("latents_std") is not None:
        raise TargetError(f"{vae_file}: naa-guard encodes with an AutoencoderKL without per-channel latents_mean / latents_std; found {vae_config.get('_class_name')!r}.")
    _check_transformer(config, transformer_file, vae_config, vae_file, pipeline)
    encoder_file = folders["text_encoder"] / "config.json"
    encoder = read_json(encoder_file)
    if (encoder.get("architectures") or [None])[0] != T5_ENCODER or encoder.get("d_model") != config.get("caption_channels"):
        raise TargetError(
            f"{encoder_file}: a {pipeline}'s text encoder is a {T5_ENCODER} whose d_model equals the transformer's caption_channels "
            f"{config.get('caption_channels')!r} ({transformer_file}); found {encoder.get('architectures')!r} with d_model {encoder.get('d_model')!r}. "
            f"The transformer and the text encoder come from different pipelines."
        )
    image_channels = vae_config.get("in_channels", 3)
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    factor = 2 ** (len(vae_config.get("block_out_channels") or [64]) - 1)
    return PixArtModelInfo(root, folders, config, vae_config, config["sample_size"] * factor, image_channels, None, 1.0, pipeline=pipeline, prediction_type=prediction)


def _check_transformer(config: dict[str, Any], file: Path, vae_config: dict[str, Any], vae_file: Path, pipeline: str) -> None:
    """Return None; raise TargetError when the transformer cannot denoise the VAE's latents as the pipeline calls it."""
    size, channels, patch = (_int(config, key, file, default) for key, default in (("sample_size", None), ("in_channels", 4), ("patch_size", 2)))
    latent_channels = vae_config.get("latent_channels", 4)
    out_channels = config.get("out_channels") or channels
    if channels != latent_channels or out_channels not in (channels, 2 * channels):
        raise TargetError(
            f"{file}: in_channels {channels} / out_channels {out_channels} do not fit the VAE's latent_channels {latent_channels} ({vae_file}): "
            f"expected in_channels {latent_channels} and out_channels {latent_channels} (the prediction) or {2 * latent_channels} (with PixArt's learned variance)."
        )
    if size % patch:
        raise TargetError(f"{file}: sample_size {size} is not a multiple of patch_size {patch}. Re-save the transformer with save_pretrained.")
    inner = _int(config, "num_attention_heads", file, 16) * _int(config, "attention_head_dim", file, 72)
    if config.get("cross_attention_dim") not in (None, inner) or not isinstance(config.get("caption_channels"), int):
        raise TargetError(
            f"{file}: cross_attention_dim {config.get('cross_attention_dim')!r} / caption_channels {config.get('caption_channels')!r}: the captions are "
            f"projected to num_attention_heads x attention_head_dim = {inner}, which cross_attention_dim must equal, from caption_channels (the T5's d_model)."
        )
    extra = config.get("use_additional_conditions")
    extra = size == ALPHA_CONDITIONED_SIZE if extra is None else extra
    fed = pipeline == PIXART_ALPHA and size == ALPHA_CONDITIONED_SIZE
    if extra and not fed:
        raise TargetError(
            f"{file}: use_additional_conditions is on (resolution / aspect ratio inputs), but the {pipeline} feeds them "
            f"{'only at sample_size 128' if pipeline == PIXART_ALPHA else 'never'}; it cannot call this transformer. The transformer belongs to another pipeline."
        )
