"""A Sana pipeline folder read without loading it: a linear-attention DiT trained by flow matching.

``SanaPipeline`` (diffusers 0.42) denoises the latents of a deterministic DC autoencoder
(``AutoencoderDC``: ``encode(x).latent``, scaled by its ``scaling_factor``, no shift) with a
``SanaTransformer2DModel`` conditioned on Gemma2 hidden states and their attention mask. It is
trained by rectified flow (SPEC section 3b: ``x_s = (1 - s) z0 + s e``, velocity ``v = e - z0``;
the scheduler's ``flow_prediction`` reads ``z0 = x_s - s v``), so it is a flow target
(:mod:`~naa_guard.targets.sana`). Its time input is ``1000 s`` times the transformer's
``timestep_scale``. The configs are checked to agree here, before any weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.targets.pipelinefolders import pipeline_folders
from naa_guard.targets.base import read_json
from naa_guard.targets.flow_info import FLOW_STEPS, ISSUE, PARAMETRIZATION, FlowModelInfo

SANA_PIPELINE = "SanaPipeline"
SANA_TRANSFORMER = "SanaTransformer2DModel"
SANA_VAE = "AutoencoderDC"
GEMMA_ENCODERS = ("Gemma2Model",)
GEMMA_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast")
SANA_TOKENS = 300  # SanaPipeline's max_sequence_length default
NAMES = ["vae", "transformer", "scheduler", "text_encoder", "tokenizer"]


@dataclass(frozen=True)
class SanaModelInfo(FlowModelInfo):
    """What can be read from a Sana pipeline folder; ``unet_config`` holds the transformer's config."""

    family: str = "sana"

    @property
    def timestep_scale(self) -> float:
        """Return the factor the pipeline multiplies the scheduler's timestep (1000 s) by."""
        return float(self.unet_config.get("timestep_scale", 1.0))

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: the family and its parametrization."""
        return {"lora_scale": None, "family": self.family, "parametrization": f"{PARAMETRIZATION}; {self.family}: {self.time_input()}"}

    def size_source(self) -> str:
        """Return where the pipeline's image size comes from: the transformer's sample_size x the autoencoder's compression."""
        factor = 2 ** (len(self.vae_config.get("encoder_block_out_channels") or [0]) - 1)
        return f"sample_size {self.sample_size // factor} in {self.unet_dir / 'config.json'} x the autoencoder's compression {factor} ({self.components['vae'] / 'config.json'} encoder_block_out_channels)"

    def time_input(self) -> str:
        """Return how the transformer is called, in the reports' words."""
        sigma = int(self.unet_config.get("out_channels") or 0) == 2 * int(self.unet_config.get("in_channels") or 0)
        return (
            f"time input 1000 s x timestep_scale {self.timestep_scale:g}, Gemma2 condition with attention mask ({SANA_TOKENS} tokens after the "
            f"pipeline's complex human instruction), lower-cased captions, DC-AE latents (encode(x).latent x scaling_factor)"
            + ("; learned-sigma output, first half is the velocity" if sigma else "")
        )


def _positive_int(config: dict[str, Any], key: str, file: Path, default: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TargetError(f"{file}: {key} is {value!r}; expected a positive int. Re-save this component with save_pretrained.")
    return value


def _check_scheduler(file: Path) -> None:
    """Return None; raise TargetError unless the scheduler is one SanaPipeline samples a flow-matching model with."""
    if not file.is_file():
        raise TargetError(f"{file.parent}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    config = read_json(file)
    name = config.get("_class_name")
    flow_dpm = name == "DPMSolverMultistepScheduler" and config.get("prediction_type") == "flow_prediction" and config.get("use_flow_sigmas") is True
    if name != "FlowMatchEulerDiscreteScheduler" and not flow_dpm:
        raise TargetError(
            f"{file}: scheduler {name!r} with prediction_type {config.get('prediction_type')!r}, use_flow_sigmas {config.get('use_flow_sigmas')!r}; "
            f"a {SANA_PIPELINE} is trained by flow matching and needs a FlowMatchEulerDiscreteScheduler or a DPMSolverMultistepScheduler "
            f"with prediction_type: flow_prediction and use_flow_sigmas: true."
        )
    if config.get("num_train_timesteps", FLOW_STEPS) != FLOW_STEPS:
        raise TargetError(f"{file}: num_train_timesteps is {config.get('num_train_timesteps')!r}; the Sana transformer's time input is 1000 s, so expected {FLOW_STEPS}.")


def read_sana_info(root: Path, index: dict[str, Any], *, lora: Path | None) -> SanaModelInfo:
    """Return a Sana pipeline folder's components and geometry after checking its configs agree."""
    if lora is not None:
        raise TargetError(f"{root}: model.lora on a {SANA_PIPELINE} is not audited yet ({ISSUE}); remove model.lora, or fuse the LoRA into the transformer and save the pipeline with save_pretrained.")
    folders = pipeline_folders(root, NAMES, SANA_PIPELINE)
    tokenizer_file = folders["tokenizer"] / "tokenizer_config.json"
    if not tokenizer_file.is_file() or read_json(tokenizer_file).get("tokenizer_class") not in GEMMA_TOKENIZERS:
        found = read_json(tokenizer_file).get("tokenizer_class") if tokenizer_file.is_file() else "no tokenizer_config.json"
        raise TargetError(f"{tokenizer_file}: a {SANA_PIPELINE}'s tokenizer is a {' or '.join(GEMMA_TOKENIZERS)}; found {found!r}. Save the tokenizer with save_pretrained.")
    _check_scheduler(folders["scheduler"] / "scheduler_config.json")
    transformer_file, vae_file, encoder_file = (folders[name] / "config.json" for name in ("transformer", "vae", "text_encoder"))
    config, vae_config, encoder = read_json(transformer_file), read_json(vae_file), read_json(encoder_file)
    if config.get("_class_name") != SANA_TRANSFORMER:
        raise TargetError(f"{transformer_file}: transformer class {config.get('_class_name')!r}; a {SANA_PIPELINE} needs a {SANA_TRANSFORMER}.")
    if vae_config.get("_class_name") != SANA_VAE or vae_config.get("latents_mean") is not None or vae_config.get("shift_factor") is not None:
        raise TargetError(f"{vae_file}: VAE class {vae_config.get('_class_name')!r}; a {SANA_PIPELINE} encodes with an {SANA_VAE} (deterministic, scaled by scaling_factor, no shift or per-channel statistics).")
    scaling = vae_config.get("scaling_factor")
    if not isinstance(scaling, (int, float)) or isinstance(scaling, bool) or not scaling > 0:
        raise TargetError(f"{vae_file}: scaling_factor is {scaling!r}; expected a positive number (the latents are encode(x).latent x scaling_factor).")
    _check_transformer(config, transformer_file, vae_config, vae_file)
    if (encoder.get("architectures") or [None])[0] not in GEMMA_ENCODERS or encoder.get("hidden_size") != config.get("caption_channels"):
        raise TargetError(
            f"{encoder_file}: a {SANA_PIPELINE}'s text encoder is a {' or '.join(GEMMA_ENCODERS)} whose hidden_size equals the transformer's caption_channels "
            f"{config.get('caption_channels')!r} ({transformer_file}); found {encoder.get('architectures')!r} with hidden_size {encoder.get('hidden_size')!r}. "
            f"The transformer and the text encoder come from different pipelines."
        )
    image_channels = vae_config.get("in_channels", 3)
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    blocks = vae_config.get("encoder_block_out_channels")
    if not isinstance(blocks, list) or not blocks:
        raise TargetError(f"{vae_file}: encoder_block_out_channels is {blocks!r}; expected a non-empty list (its length sets the compression 2^(n-1)).")
    factor = 2 ** (len(blocks) - 1)
    return SanaModelInfo(root, folders, config, vae_config, config["sample_size"] * factor, image_channels, None, 1.0)


def _check_transformer(config: dict[str, Any], file: Path, vae_config: dict[str, Any], vae_file: Path) -> None:
    """Return None; raise TargetError when the transformer cannot denoise the autoencoder's latents as SanaPipeline calls it."""
    size, channels, patch = (_positive_int(config, key, file, default) for key, default in (("sample_size", 32), ("in_channels", 32), ("patch_size", 1)))
    config.setdefault("sample_size", size)
    latent_channels = vae_config.get("latent_channels", 32)
    out_channels = config.get("out_channels") or channels
    if channels != latent_channels or out_channels not in (channels, 2 * channels):
        raise TargetError(
            f"{file}: in_channels {channels} / out_channels {out_channels} do not fit the autoencoder's latent_channels {latent_channels} ({vae_file}): "
            f"expected in_channels {latent_channels} and out_channels {latent_channels} (or {2 * latent_channels} with a learned variance)."
        )
    if size % patch:
        raise TargetError(f"{file}: sample_size {size} is not a multiple of patch_size {patch}. Re-save the transformer with save_pretrained.")
    inner = _positive_int(config, "num_attention_heads", file, 70) * _positive_int(config, "attention_head_dim", file, 32)
    if config.get("cross_attention_dim", 2240) != inner or not isinstance(config.get("caption_channels", 2304), int):
        raise TargetError(
            f"{file}: cross_attention_dim {config.get('cross_attention_dim', 2240)!r}: the captions are projected to num_attention_heads x attention_head_dim = {inner}, "
            f"which cross_attention_dim must equal. Re-save the transformer with save_pretrained."
        )
    if config.get("guidance_embeds"):
        raise TargetError(f"{file}: guidance_embeds is on: a guidance-distilled Sana (SanaSprintPipeline) is not audited yet ({ISSUE}); a {SANA_PIPELINE} never feeds a guidance input.")
    scale = config.get("timestep_scale", 1.0)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise TargetError(f"{file}: timestep_scale is {scale!r}; expected a positive number (the time input is 1000 s times it).")
