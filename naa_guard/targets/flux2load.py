"""Loading a Flux 2 [klein] pipeline's VAE, Qwen3 text encoder and tokenizer offline and strictly.

Every tensor of each weight file must land in its module and every module tensor must come from
the files (:func:`~naa_guard.targets.modelcheck.check_weights_match`): for the VAE this covers the
batch norm's ``running_mean`` / ``running_var``, which define the latent space (left at their
initial 0 / 1 they would give another z0 without any error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import check_component_weights, read_json
from naa_guard.targets.flux2_info import QWEN3_ENCODER, QWEN_TOKENIZERS

QWEN_WEIGHTS = ("model.safetensors", "model.fp16.safetensors")


def load_qwen_tokenizer(folder: Path, transformers: Any) -> Any:
    """Return the pipeline's Qwen tokenizer (with its chat template), loaded offline from its folder."""
    class_name = str(read_json(folder / "tokenizer_config.json").get("tokenizer_class") or "Qwen2TokenizerFast")
    if class_name not in QWEN_TOKENIZERS:
        raise TargetError(f"{folder}: tokenizer class {class_name!r}; a Flux 2 [klein] pipeline uses one of {', '.join(QWEN_TOKENIZERS)}.")
    return getattr(transformers, class_name).from_pretrained(folder, local_files_only=True)


def load_flux2_parts(info_components: dict[str, Path], transformers: Any, allow_pickle: bool, dtype: Any) -> dict[str, Any]:
    """Return the pipeline's vae, text_encoder (built in the audit's ``dtype``) and tokenizer, each loaded strictly from its folder."""
    import diffusers

    from naa_guard.targets.components import _check_text_weights, _text_weight_files
    from naa_guard.targets.modelcheck import check_weights_match
    from naa_guard.targets.variants import weight_files_for

    tokenizer = load_qwen_tokenizer(info_components["tokenizer"], transformers)
    vae_folder = info_components["vae"]
    use_safetensors, variant = check_component_weights(vae_folder, allow_pickle)
    vae = diffusers.AutoencoderKLFlux2.from_pretrained(vae_folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False)
    check_weights_match(vae, weight_files_for(vae_folder, use_safetensors, variant), vae_folder)
    encoder_folder = info_components["text_encoder"]
    use_safetensors, variant = check_component_weights(encoder_folder, allow_pickle, QWEN_WEIGHTS)
    encoder = getattr(transformers, QWEN3_ENCODER).from_pretrained(encoder_folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, dtype=dtype)  # the audit's dtype, not config.json's
    _check_text_weights(encoder, _text_weight_files(encoder_folder, variant), encoder_folder)
    return {"vae": vae, "text_encoder": encoder, "tokenizer": tokenizer}
