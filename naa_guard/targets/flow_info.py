"""A flow-matching transformer pipeline folder (Stable Diffusion 3 / 3.5) read without loading it.

SPEC section 3b: the denoiser is an ``SD3Transformer2DModel`` trained by rectified flow
(``x_s = (1 - s) z0 + s e``, velocity prediction), conditioned on two CLIP encoders and, where
``model_index.json`` names ``text_encoder_3``, a T5 encoder (without it the pipeline feeds zeros, as
diffusers does). Flux and other transformer pipelines are refused in :mod:`~naa_guard.targets.detect`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from naa_guard.errors import PolicyError, TargetError
from naa_guard.targets.base import read_json
from naa_guard.targets.latent_info import LatentModelInfo, find_lora
from naa_guard.targets.pipelinefolders import pipeline_folders
from naa_guard.targets.variants import component_files

SD3_PIPELINE = "StableDiffusion3Pipeline"
SD3_TRANSFORMER = "SD3Transformer2DModel"
T5_ENCODER = "T5EncoderModel"
FLUX_PIPELINE = "FluxPipeline"
FLUX_TRANSFORMER = "FluxTransformer2DModel"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
ISSUE = "naa-guard issue 26"
# Every timestep t of an attack means s = t / FLOW_STEPS on the flow path (SD3's time input is 1000 s).
FLOW_STEPS = 1000
PARAMETRIZATION = "flow matching: x_s = (1 - s) z0 + s e, velocity v = e - z0; e_hat = x_s + (1 - s) v_hat, z0_hat = x_s - s v_hat; attack timestep t means s = t / 1000"
TIME_INPUTS = {
    "sd3": "time input 1000 s", "flux": "time input s (the transformer scales by 1000), 2x2-packed latents",
    "flux2": (
        "time input s (the transformer scales by 1000), no guidance input; z0 = the VAE mode patchified 2x2, minus the VAE's "
        "bn.running_mean, over sqrt(bn.running_var + batch_norm_eps); Qwen3 hidden states 9, 18, 27 of the chat-templated caption (512 tokens)"
    ),
}
# The pipelines' defaults (diffusers 0.42): StableDiffusion3Pipeline's max_sequence_length 256 (without a T5 it feeds that
# many zero tokens), FluxPipeline's 512 and guidance_scale 3.5 (the guidance input of guidance-distilled transformers).
# Only these two families read model.max_sequence_length / model.guidance; the others' conditioning is in TIME_INPUTS.
T5_TOKENS = {"sd3": 256, "flux": 512}
MAX_T5_TOKENS = 512  # both pipelines refuse a longer max_sequence_length
FLUX_GUIDANCE = 3.5


@dataclass(frozen=True)
class FlowModelInfo(LatentModelInfo):
    """What can be read from an SD3 pipeline folder; ``unet_config`` holds the transformer's config."""

    family: str = "sd3"
    max_sequence_length: int | None = None  # model.max_sequence_length (None: the pipeline's default, T5_TOKENS)
    guidance: float | None = None  # model.guidance (None: FLUX_GUIDANCE where the transformer is guidance-distilled)

    @property
    def t5_tokens(self) -> int | None:
        """Return the T5 tokens of each prompt (SD3 without a T5: the zero tokens fed in their place); None for a family without the key."""
        if self.family not in T5_TOKENS:
            return None  # its text encoder and length are its own, stated in TIME_INPUTS
        return self.max_sequence_length if self.max_sequence_length is not None else T5_TOKENS[self.family]

    @property
    def guidance_input(self) -> float | None:
        """Return the guidance input of a guidance-distilled transformer (``guidance_embeds``), else None."""
        if not self.unet_config.get("guidance_embeds", False):
            return None
        return self.guidance if self.guidance is not None else FLUX_GUIDANCE

    def text_settings(self) -> str:
        """Return the conditioning settings the scores depend on, as the reports state them."""
        if self.family not in T5_TOKENS:
            return "conditioning as stated for the family"
        t5 = f"T5 tokens {self.t5_tokens}" if "text_encoder_3" in self.components or self.family != "sd3" else f"no T5: {self.t5_tokens} zero tokens"
        guidance = self.guidance_input
        return t5 + ("" if guidance is None else f", guidance {guidance:g}")

    @property
    def unet_dir(self) -> Path:
        """Return the transformer's folder (named in messages)."""
        return self.components["transformer"]

    def encoder_files(self) -> list[Path]:
        """Return the files the encodings depend on: the VAE, text encoders and tokenizers."""
        files = [p for name, folder in self.components.items() if name not in ("transformer", "scheduler") for p in component_files(folder, self.variant, name)]
        return files + ([self.lora] if self.lora is not None else [])

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: the family and its parametrization."""
        return {
            "lora_scale": self.lora_scale if self.lora is not None else None, "family": self.family,
            "parametrization": f"{PARAMETRIZATION}; {self.family}: {TIME_INPUTS[self.family]}; {self.text_settings()}",
            "t5_tokens": self.t5_tokens, "guidance": self.guidance_input,
        }  # fmt: skip


def with_text_settings(info: Any, *, max_sequence_length: int | None, guidance: float | None, where: str) -> Any:
    """Return the model info with the policy's model.max_sequence_length and model.guidance; raise PolicyError where they do not apply.

    Decided from the configs, before any model loads: model.max_sequence_length applies to SD3 and
    Flux pipelines (SD3 without a T5 still feeds that many zero tokens, as diffusers does), and
    model.guidance only to a guidance-distilled Flux transformer (``guidance_embeds: true``): on
    any other model the key would change nothing, and a setting that is silently ignored is refused.
    ``where`` names the policy file in messages.
    """
    if max_sequence_length is None and guidance is None:
        return info
    if not isinstance(info, FlowModelInfo) or info.family not in T5_TOKENS:  # Sana, Flux 2: their pipelines' own lengths, no guidance input
        key = "model.max_sequence_length" if max_sequence_length is not None else "model.guidance"
        raise PolicyError(f"{where}: {key} is set, but {info.root} is not an SD3 / Flux pipeline ({SD3_PIPELINE} or {FLUX_PIPELINE}); the key would change nothing there. Remove {key}.")
    if max_sequence_length is not None and not 1 <= max_sequence_length <= MAX_T5_TOKENS:
        raise PolicyError(f"{where}: model.max_sequence_length is {max_sequence_length}; expected 1 to {MAX_T5_TOKENS} (the pipelines refuse more T5 tokens).")
    if guidance is not None and not info.unet_config.get("guidance_embeds", False):
        config = info.unet_dir / "config.json"
        raise PolicyError(
            f"{where}: model.guidance is {guidance:g}, but this transformer takes no guidance input ({config}: guidance_embeds is "
            f"{info.unet_config.get('guidance_embeds', False)!r}; only a guidance-distilled Flux transformer has one). Remove model.guidance."
        )
    return replace(info, max_sequence_length=max_sequence_length, guidance=guidance)


def _int(config: dict[str, Any], key: str, file: Path) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TargetError(f"{file}: {key} is {value!r}; expected a positive int. Re-save the transformer with save_pretrained.")
    return value


def read_sd3_info(root: Path, index: dict[str, Any], *, lora: Path | None, lora_scale: float = 1.0, variant: str | None = None) -> FlowModelInfo:
    """Return an SD3 pipeline folder's components and geometry after checking its configs agree."""
    index_file = root / "model_index.json"
    t5 = index.get("text_encoder_3")
    with_t5 = isinstance(t5, list) and any(part is not None for part in t5)
    if with_t5 and tuple(t5) != ("transformers", T5_ENCODER):
        raise TargetError(f"{index_file}: text_encoder_3 is {t5!r}; an SD3 pipeline's third text encoder is [\"transformers\", \"{T5_ENCODER}\"] or [null, null] (none).")
    names = ["vae", "transformer", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"] + (["text_encoder_3", "tokenizer_3"] if with_t5 else [])
    folders = pipeline_folders(root, names, "SD3 pipeline")
    scheduler_file = folders["scheduler"] / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise TargetError(f"{folders['scheduler']}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    scheduler = read_json(scheduler_file)
    if scheduler.get("_class_name") not in FLOW_SCHEDULERS:
        raise TargetError(f"{scheduler_file}: scheduler {scheduler.get('_class_name')!r}; an SD3 pipeline is trained by flow matching and needs {', '.join(FLOW_SCHEDULERS)}.")
    if scheduler.get("num_train_timesteps", FLOW_STEPS) != FLOW_STEPS:
        raise TargetError(f"{scheduler_file}: num_train_timesteps is {scheduler.get('num_train_timesteps')!r}; the SD3 transformer's time input is 1000 s, so expected {FLOW_STEPS}.")
    transformer_file, vae_file = folders["transformer"] / "config.json", folders["vae"] / "config.json"
    config, vae_config = read_json(transformer_file), read_json(vae_file)
    if config.get("_class_name") != SD3_TRANSFORMER:
        raise TargetError(f"{transformer_file}: transformer class {config.get('_class_name')!r}; a {SD3_PIPELINE} needs an {SD3_TRANSFORMER}.")
    if vae_config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise TargetError(f"{vae_file}: VAE class {vae_config.get('_class_name')!r} is not supported; naa-guard encodes with an AutoencoderKL.")
    if vae_config.get("latents_mean") is not None or vae_config.get("latents_std") is not None:
        raise TargetError(f"{vae_file}: this VAE normalises latents per channel (latents_mean / latents_std), which naa-guard does not apply; refusing rather than encoding differently from training.")
    latent_size, channels, patch = (_int(config, key, transformer_file) for key in ("sample_size", "in_channels", "patch_size"))
    out_channels = config.get("out_channels") or channels
    latent_channels = vae_config.get("latent_channels", 4)
    if channels != latent_channels or out_channels != channels:
        raise TargetError(f"{transformer_file}: in_channels {channels} / out_channels {out_channels} do not match the VAE's latent_channels {latent_channels} ({vae_file}); the transformer must predict a velocity of the latent's shape.")
    if latent_size % patch:
        raise TargetError(f"{transformer_file}: sample_size {latent_size} is not a multiple of patch_size {patch}. Re-save the transformer with save_pretrained.")
    _check_text_widths(config, transformer_file, folders)
    for tokenizer in ("tokenizer", "tokenizer_2") + (("tokenizer_3",) if with_t5 else ()):
        if not any(folders[tokenizer].glob("*.json")):
            raise TargetError(f"{folders[tokenizer]}: no tokenizer files (tokenizer_config.json, vocab.json, ...). Save the tokenizer with save_pretrained.")
    image_channels = vae_config.get("in_channels", 3)
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    factor = 2 ** (len(vae_config.get("block_out_channels") or [64]) - 1)
    return FlowModelInfo(root, folders, config, vae_config, latent_size * factor, image_channels, find_lora(lora), lora_scale, variant)


def _check_text_widths(config: dict[str, Any], file: Path, folders: dict[str, Path]) -> None:
    """Return None; raise TargetError when the CLIP encoders' states do not fit the transformer's inputs."""
    hidden, pooled = 0, 0
    for name in ("text_encoder", "text_encoder_2"):
        encoder = read_json(folders[name] / "config.json")
        if (encoder.get("architectures") or [None])[0] != "CLIPTextModelWithProjection":
            raise TargetError(f"{folders[name] / 'config.json'}: an SD3 text encoder must be a CLIPTextModelWithProjection (its pooled projection conditions the transformer); found {encoder.get('architectures')!r}.")
        hidden += int(encoder.get("hidden_size", 512))
        pooled += int(encoder.get("projection_dim", 512))
    joint, projection = config.get("joint_attention_dim"), config.get("pooled_projection_dim")
    if "text_encoder_3" in folders:
        t5_file = folders["text_encoder_3"] / "config.json"
        t5 = read_json(t5_file)
        if (t5.get("architectures") or [None])[0] != T5_ENCODER or t5.get("d_model") != joint:
            raise TargetError(
                f"{t5_file}: the third text encoder must be a {T5_ENCODER} whose d_model equals the transformer's joint_attention_dim "
                f"{joint!r} ({file}); found {t5.get('architectures')!r} with d_model {t5.get('d_model')!r}. The transformer and the T5 come from different pipelines."
            )
    if not isinstance(joint, int) or hidden > joint or projection != pooled:
        raise TargetError(
            f"{file}: joint_attention_dim {joint!r} / pooled_projection_dim {projection!r} do not fit the CLIP encoders' hidden states "
            f"({hidden} wide together, at most joint_attention_dim) and pooled embeddings ({pooled} wide together, must equal "
            f"pooled_projection_dim). The transformer and the text encoders come from different pipelines."
        )


def _common_checks(root: Path, index: dict[str, Any], names: list[str], lora: Path | None, kind: str) -> tuple[dict[str, Path], dict[str, Any], dict[str, Any], Path, Path]:
    """Return (folders, transformer config, VAE config, their files) after the checks every flow pipeline shares."""
    if lora is not None and kind != "Flux":  # Flux LoRAs: checked layer by layer on loading (targets/lora.py, loralayers.py)
        raise TargetError(f"{root}: model.lora on a {kind} pipeline is not audited yet ({ISSUE}); remove model.lora, or merge the LoRA into the transformer and save it with save_pretrained.")
    folders = pipeline_folders(root, names, f"{kind} pipeline")
    for name in names:
        if name.startswith("tokenizer") and not any(folders[name].glob("*.json")):
            raise TargetError(f"{folders[name]}: no tokenizer files (tokenizer_config.json, tokenizer.json, ...). Save the tokenizer with save_pretrained.")
    scheduler_file = folders["scheduler"] / "scheduler_config.json"
    if not scheduler_file.is_file() or read_json(scheduler_file).get("_class_name") not in FLOW_SCHEDULERS:
        raise TargetError(f"{scheduler_file}: a {kind} pipeline is trained by flow matching and needs a {', '.join(FLOW_SCHEDULERS)} config here.")
    transformer_file, vae_file = folders["transformer"] / "config.json", folders["vae"] / "config.json"
    config, vae_config = read_json(transformer_file), read_json(vae_file)
    if vae_config.get("_class_name", "AutoencoderKL") != "AutoencoderKL" or vae_config.get("latents_mean") is not None or vae_config.get("latents_std") is not None:
        raise TargetError(f"{vae_file}: naa-guard encodes with an AutoencoderKL without per-channel latents_mean / latents_std; found {vae_config.get('_class_name')!r}.")
    return folders, config, vae_config, transformer_file, vae_file


def read_flux_info(root: Path, index: dict[str, Any], *, lora: Path | None, lora_scale: float = 1.0, variant: str | None = None) -> FlowModelInfo:
    """Return a Flux pipeline folder's components and geometry (CLIP + T5, 2x2-packed latents) after checking its configs agree."""
    names = ["vae", "transformer", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
    folders, config, vae_config, transformer_file, vae_file = _common_checks(root, index, names, lora, "Flux")
    if config.get("_class_name") != FLUX_TRANSFORMER:
        raise TargetError(f"{transformer_file}: transformer class {config.get('_class_name')!r}; a {FLUX_PIPELINE} needs a {FLUX_TRANSFORMER}.")
    latent_channels = vae_config.get("latent_channels", 4)
    channels = config.get("in_channels", 64)
    if config.get("patch_size", 1) != 1 or channels != 4 * latent_channels or (config.get("out_channels") or channels) != channels:
        raise TargetError(
            f"{transformer_file}: in_channels {channels} / out_channels {config.get('out_channels')} / patch_size {config.get('patch_size', 1)} do not fit "
            f"2x2-packed latents of the VAE's latent_channels {latent_channels} ({vae_file}): expected in_channels = out_channels = {4 * latent_channels}, patch_size 1."
        )
    clip, t5 = read_json(folders["text_encoder"] / "config.json"), read_json(folders["text_encoder_2"] / "config.json")
    if (clip.get("architectures") or [None])[0] != "CLIPTextModel" or (t5.get("architectures") or [None])[0] != T5_ENCODER:
        raise TargetError(f"{root}: a Flux pipeline's text_encoder is a CLIPTextModel and its text_encoder_2 a {T5_ENCODER}; found {clip.get('architectures')!r} and {t5.get('architectures')!r}.")
    if config.get("joint_attention_dim") != t5.get("d_model") or config.get("pooled_projection_dim") != clip.get("hidden_size", 512):
        raise TargetError(
            f"{transformer_file}: joint_attention_dim {config.get('joint_attention_dim')!r} / pooled_projection_dim {config.get('pooled_projection_dim')!r} do not match "
            f"the T5's d_model {t5.get('d_model')!r} and the CLIP's hidden_size {clip.get('hidden_size', 512)!r}. The transformer and the text encoders come from different pipelines."
        )
    factor = 2 ** (len(vae_config.get("block_out_channels") or [64]) - 1)
    size = vae_config.get("sample_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % (2 * factor):
        raise TargetError(f"{vae_file}: sample_size is {size!r}; a Flux pipeline takes its image size from the VAE config, which must be a positive multiple of {2 * factor} (2x2 packing of latents {factor}x smaller).")
    image_channels = vae_config.get("in_channels", 3)
    if image_channels not in (1, 3):
        raise TargetError(f"{vae_file}: in_channels is {image_channels!r}; expected 1 or 3 image channels.")
    return FlowModelInfo(root, folders, config, vae_config, size, image_channels, find_lora(lora), lora_scale, variant, family="flux")
