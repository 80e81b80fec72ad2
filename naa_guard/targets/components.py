"""Loading a latent pipeline's text encoders strictly: every tensor of the weight files must land in
the module and every module tensor must come from them (no silently random weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import check_component_weights, read_json
from naa_guard.targets.latent_info import TEXT_ENCODER_CLASSES, TEXT_WEIGHTS

T5_ENCODER = "T5EncoderModel"  # SD3's text_encoder_3
T5_TOKENIZERS = ("T5Tokenizer", "T5TokenizerFast")

if TYPE_CHECKING:
    pass


def _text_weight_files(folder: Path, variant: str | None) -> list[Path]:
    """Return the weight files transformers loads from a text encoder folder (shards included) for this variant."""
    from naa_guard.targets.variants import choose_weights

    return list(choose_weights(folder, variant, "transformers").files)


def _check_text_weights(module: Any, files: list[Path], where: Path) -> None:
    """Return None; raise TargetError unless the files hold exactly the text encoder's tensors and shapes.

    ``position_ids`` buffers are ignored: older transformers saved them, newer ones rebuild them.
    """
    from naa_guard.targets.modelcheck import shape_differences, weight_shapes

    stored = weight_shapes(files)
    missing, unexpected, reshaped = shape_differences(module, stored, ignore_suffix="position_ids")
    tensors = dict(module.state_dict(keep_vars=True))
    loaded = {id(tensors[name]) for name in stored if name in tensors}
    missing = [name for name in missing if id(tensors.get(name)) not in loaded]  # tied to a stored tensor (T5's embed_tokens = shared)
    if missing or unexpected or reshaped:
        raise TargetError(
            f"{where}: the weights ({', '.join(f.name for f in files)}) do not match the {type(module).__name__} its config.json "
            f"describes: missing {missing[:5]}, unexpected {unexpected[:5]}, reshaped {reshaped[:5]}. A missing tensor would "
            f"stay random; check that config.json belongs to these weights, or re-save the text encoder with save_pretrained."
        )


def load_component(name: str, folder: Path, transformers: Any, allow_pickle: bool, variant: str | None = None, dtype: Any = None) -> Any:
    """Return one pipeline component loaded offline and strictly from its folder (the weight files of ``model.variant``).

    A text encoder is built in ``dtype`` (the audit's; default float32): its stored weights cast once, never first
    rounded to the dtype its config.json names, and never held in float32 for a half-precision audit (T5-XXL: 19 GB).
    """
    import diffusers
    import torch

    from naa_guard.targets.modelcheck import check_weights_match
    from naa_guard.targets.variants import weight_files_for

    if name.startswith("tokenizer"):
        config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        class_name = str(config.get("tokenizer_class") or ("T5TokenizerFast" if name == "tokenizer_3" else "CLIPTokenizer"))
        if class_name not in (T5_TOKENIZERS if name == "tokenizer_3" else ("CLIPTokenizer", "CLIPTokenizerFast")):
            raise TargetError(f"{folder}: tokenizer class {class_name!r} is not supported; Stable Diffusion pipelines use a CLIPTokenizer.")
        return getattr(transformers, class_name).from_pretrained(folder, local_files_only=True)
    config_file = folder / "config.json"
    config = read_json(config_file)
    if name.startswith("text_encoder"):
        class_name = (config.get("architectures") or ["CLIPTextModel"])[0]
        if class_name not in ((T5_ENCODER,) if name == "text_encoder_3" else TEXT_ENCODER_CLASSES):
            raise TargetError(f"{config_file}: text encoder class {class_name!r} is not supported; expected one of {', '.join(TEXT_ENCODER_CLASSES)}.")
        use_safetensors, variant = check_component_weights(folder, allow_pickle, TEXT_WEIGHTS, variant)
        # the audit's dtype, not config.json's (transformers would otherwise take that, e.g. float16, and round float32
        # weights to it before the target casts them): the same values as loading in float32 and casting to runtime.dtype
        module = getattr(transformers, class_name).from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, dtype=torch.float32 if dtype is None else dtype)
        _check_text_weights(module, _text_weight_files(folder, variant), folder)
        return module
    # modelcheck.check_config_types is not applied: diffusers annotates these block lists as
    # Tuple[str] (one item) while every real config has several. Sizes were checked on reading.
    cls = diffusers.AutoencoderKL if name == "vae" else diffusers.UNet2DConditionModel
    use_safetensors, variant = check_component_weights(folder, allow_pickle, variant=variant)
    module = cls.from_pretrained(folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, low_cpu_mem_usage=False)
    check_weights_match(module, weight_files_for(folder, use_safetensors, variant), folder)
    return module
