"""A Flux 2 pipeline folder read without loading it: Flux2KleinPipeline is audited, Flux2Pipeline refused.

Flux 2 [klein] (``Flux2KleinPipeline``): a ``Flux2Transformer2DModel`` trained by rectified flow on
an ``AutoencoderKLFlux2``'s latents patchified 2x2 and normalised by the VAE's batch norm, and
conditioned on a ``Qwen3ForCausalLM``'s hidden states 9, 18 and 27 (see
:mod:`~naa_guard.targets.flux2`). Every check here needs only the JSON files: the pieces must fit
together the way the pipeline wires them, or the audit would score another model than the one trained.

Flux 2 [dev] (``Flux2Pipeline``: a Mistral3 encoder behind a Pixtral processor with a system
message, a guidance-distilled transformer) is refused until it is audited (:data:`FLUX2_DEV_REFUSAL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.targets.pipelinefolders import pipeline_folders
from naa_guard.targets.base import read_json
from naa_guard.targets.flow_info import FLOW_SCHEDULERS, ISSUE, FlowModelInfo

KLEIN_PIPELINE = "Flux2KleinPipeline"
FLUX2_DEV_PIPELINE = "Flux2Pipeline"
FLUX2_TRANSFORMER = "Flux2Transformer2DModel"
FLUX2_VAE = "AutoencoderKLFlux2"
QWEN3_ENCODER = "Qwen3ForCausalLM"
QWEN_TOKENIZERS = ("Qwen2Tokenizer", "Qwen2TokenizerFast")
DEEPEST_LAYER = 27  # the pipeline stacks hidden states 9, 18, 27: the encoder needs 27 layers at least
FLUX2_DEV_REFUSAL = (
    f"{FLUX2_DEV_PIPELINE} (Flux 2 [dev]) is not audited yet ({ISSUE}): its condition (a Mistral3ForConditionalGeneration's hidden "
    f"states 10, 20 and 30 of the PixtralProcessor's chat with the pipeline's system message) and its guidance input (guidance_scale, "
    f"default 4.0) are not reproduced and tested against the pipeline (its PixtralProcessor needs torchvision, which naa-guard does "
    f"not depend on), and a condition or time input that differs from the pipeline's gives plausible but wrong scores. "
    f"{KLEIN_PIPELINE} (Flux 2 [klein]) is audited."
)


def _class_of(index: dict[str, Any], name: str) -> str | None:
    entry = index.get(name)
    return str(entry[1]) if isinstance(entry, list) and len(entry) == 2 and entry[1] is not None else None


def _chat_template(folder: Path) -> bool:
    """Return whether the tokenizer folder holds a chat template (the pipeline wraps every caption in it)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(read_json(config).get("chat_template"))


def read_flux2_klein_info(root: Path, index: dict[str, Any], *, lora: Path | None) -> FlowModelInfo:
    """Return a Flux 2 [klein] pipeline folder's components and geometry after checking its configs agree."""
    index_file = root / "model_index.json"
    if lora is not None:
        raise TargetError(f"{root}: model.lora on a Flux 2 pipeline is not audited yet ({ISSUE}); remove model.lora, or merge the LoRA into the transformer and save it with save_pretrained.")
    expected = {"vae": FLUX2_VAE, "transformer": FLUX2_TRANSFORMER, "text_encoder": QWEN3_ENCODER, "scheduler": FLOW_SCHEDULERS[0]}
    wrong = [f"{name} {_class_of(index, name)!r} (expected {want!r})" for name, want in expected.items() if _class_of(index, name) != want]
    if _class_of(index, "tokenizer") not in QWEN_TOKENIZERS:
        wrong.append(f"tokenizer {_class_of(index, 'tokenizer')!r} (expected one of {', '.join(QWEN_TOKENIZERS)})")
    if wrong:
        raise TargetError(f"{index_file}: a {KLEIN_PIPELINE} is not wired as naa-guard reproduces it: {'; '.join(wrong)}. Save the pipeline with save_pretrained.")
    names = ["vae", "transformer", "scheduler", "text_encoder", "tokenizer"]
    folders = pipeline_folders(root, names, "Flux 2 pipeline")
    if not (folders["tokenizer"] / "tokenizer_config.json").is_file() or not _chat_template(folders["tokenizer"]):
        raise TargetError(
            f"{folders['tokenizer']}: no tokenizer_config.json with a chat template (tokenizer_config.json's chat_template or chat_template.jinja). "
            f"{KLEIN_PIPELINE} wraps every caption in the tokenizer's chat template; save the tokenizer with save_pretrained."
        )
    scheduler_file = folders["scheduler"] / "scheduler_config.json"
    if not scheduler_file.is_file() or read_json(scheduler_file).get("_class_name") not in FLOW_SCHEDULERS:
        raise TargetError(f"{scheduler_file}: a Flux 2 pipeline is trained by flow matching and needs a {', '.join(FLOW_SCHEDULERS)} config here.")
    transformer_file, vae_file, encoder_file = (folders[name] / "config.json" for name in ("transformer", "vae", "text_encoder"))
    config, vae_config, encoder = read_json(transformer_file), read_json(vae_file), read_json(encoder_file)
    _check_vae(vae_config, vae_file)
    latent_channels = vae_config.get("latent_channels", 32)
    if not isinstance(latent_channels, int) or isinstance(latent_channels, bool) or latent_channels < 1:
        raise TargetError(f"{vae_file}: latent_channels is {latent_channels!r}; expected a positive int. Re-save the VAE with save_pretrained.")
    _check_transformer(config, transformer_file, 4 * latent_channels, vae_file)
    if (encoder.get("architectures") or [None])[0] != QWEN3_ENCODER:
        raise TargetError(f"{encoder_file}: a {KLEIN_PIPELINE}'s text encoder is a {QWEN3_ENCODER}; found {encoder.get('architectures')!r}.")
    layers, width = encoder.get("num_hidden_layers"), encoder.get("hidden_size")
    if not isinstance(layers, int) or layers < DEEPEST_LAYER or not isinstance(width, int) or config.get("joint_attention_dim") != 3 * width:
        raise TargetError(
            f"{encoder_file}: num_hidden_layers {layers!r} / hidden_size {width!r} do not fit the pipeline's text condition (hidden states 9, 18 and 27 "
            f"side by side: at least {DEEPEST_LAYER} layers, and 3 x hidden_size equal to the transformer's joint_attention_dim "
            f"{config.get('joint_attention_dim')!r} in {transformer_file}). The transformer and the text encoder come from different pipelines."
        )
    factor = 2 ** (len(vae_config.get("block_out_channels") or [128, 256, 512, 512]) - 1)
    size = vae_config.get("sample_size", 1024)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % (2 * factor):
        raise TargetError(
            f"{vae_file}: sample_size is {size!r}; a Flux 2 pipeline takes its image size from the VAE config, "
            f"which must be a positive multiple of {2 * factor} (2x2 patches of latents {factor}x smaller)."
        )
    return FlowModelInfo(root, folders, config, vae_config, size, 3, None, 1.0, family="flux2")


def _check_vae(vae_config: dict[str, Any], vae_file: Path) -> None:
    if vae_config.get("_class_name") != FLUX2_VAE:
        raise TargetError(f"{vae_file}: VAE class {vae_config.get('_class_name')!r}; a {KLEIN_PIPELINE} encodes with an {FLUX2_VAE} (its batch norm normalises the latents).")
    if vae_config.get("patch_size", [2, 2]) != [2, 2]:
        raise TargetError(
            f"{vae_file}: patch_size is {vae_config.get('patch_size')!r}; the pipeline patchifies latents 2x2 "
            f"and normalises them with a batch norm over 4 x latent_channels, so expected [2, 2]."
        )
    if vae_config.get("in_channels", 3) != 3:
        raise TargetError(f"{vae_file}: in_channels is {vae_config.get('in_channels')!r}; a Flux 2 pipeline encodes RGB images (3 channels).")
    eps = vae_config.get("batch_norm_eps", 1e-4)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise TargetError(f"{vae_file}: batch_norm_eps is {eps!r}; expected a number >= 0 (the latent normalisation divides by sqrt(running_var + batch_norm_eps)).")


def _check_transformer(config: dict[str, Any], file: Path, channels: int, vae_file: Path) -> None:
    if config.get("_class_name") != FLUX2_TRANSFORMER:
        raise TargetError(f"{file}: transformer class {config.get('_class_name')!r}; a {KLEIN_PIPELINE} needs a {FLUX2_TRANSFORMER}.")
    got = config.get("in_channels", 128)
    if config.get("patch_size", 1) != 1 or got != channels or (config.get("out_channels") or got) != got:
        raise TargetError(
            f"{file}: in_channels {got!r} / out_channels {config.get('out_channels')!r} / patch_size {config.get('patch_size', 1)!r} do not fit "
            f"2x2-patchified latents of the VAE's latent_channels ({vae_file}): expected in_channels = out_channels = {channels}, patch_size 1."
        )
    axes, head = config.get("axes_dims_rope", [32, 32, 32, 32]), config.get("attention_head_dim", 128)
    if not isinstance(axes, list) or len(axes) != 4 or not all(isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in axes) or sum(axes) != head:
        raise TargetError(f"{file}: axes_dims_rope {axes!r} must give the 4-D position ids (time, row, column, layer) one axis each, summing to attention_head_dim {head!r}.")
