"""Single-file checkpoints: a whole SD 1.x / 2.x / SDXL model in one ``.safetensors`` / ``.ckpt`` (A1111, kohya-ss).

``model.single_file`` names the file and ``model.config`` a local diffusers folder of the same
architecture (the base it was tuned from, or its configs only): the folder gives every component's
config, the tokenizers and the scheduler; the file gives every weight. The UNet and the VAE load
through diffusers' ``from_single_file`` (``config=`` the folder, ``local_files_only=True``: never
the network), the text encoders through diffusers' own single-file conversion of the original
(ldm) layout. Loading is strict as for folders: diffusers converts what it recognises and leaves
the rest at random initial values, so naa-guard converts the checkpoint the same way and refuses
it when a component's tensors are missing, extra or reshaped. A pickle ``.ckpt`` can run code and
is read only with ``model.allow_pickle: true`` (and then with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import PICKLE_SUFFIXES, offline_environment
from naa_guard.targets.components import load_component
from naa_guard.targets.latent import load_latent_target
from naa_guard.targets.latent_info import LatentModelInfo

if TYPE_CHECKING:
    from naa_guard.targets.latent import LatentTarget

__all__ = ["SINGLE_FILE_SUFFIXES", "SingleFileInfo", "load_single_file_target"]

SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
_CLIP_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
_OPEN_CLIP_PREFIXES = {"text_encoder": "cond_stage_model.model.", "text_encoder_2": "conditioner.embedders.1.model."}


@dataclass(frozen=True)
class SingleFileInfo(LatentModelInfo):
    """A latent pipeline whose weights all come from one checkpoint file; configs from ``root``."""

    single_file: Path | None = None

    def identity_files(self) -> list[Path]:
        """Return the checkpoint and the config folder's non-weight files (its weights are not used)."""
        files = [p for folder in self.components.values() for p in sorted(folder.iterdir()) if p.is_file() and p.suffix not in SINGLE_FILE_SUFFIXES]
        return [*files, self.single_file] if self.single_file is not None else files

    def encoder_files(self) -> list[Path]:
        """Return every identity file: the one checkpoint holds the VAE and text encoders with the UNet."""
        return self.identity_files()

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores."""
        return {**super().identity_material(), "single_file": True}


def check_not_lora(names: list[str], file: Path, config: Path | None) -> None:
    """Return None; raise TargetError when the checkpoint's tensor names are a LoRA adapter's, not a whole model's.

    A LoRA (kohya ``lora_unet_*``, diffusers ``*.lora.down``, peft ``lora_A``) holds only low-rank updates of a base
    model's layers: read as a whole model it fails as "missing weights", without saying what the file is.
    """
    lora = [name for name in names if "lora" in name.lower()]
    if lora and 2 * len(lora) >= len(names):
        base = config if config is not None else "<the base pipeline folder>"
        raise TargetError(
            f"model.single_file {file}: this is a LoRA adapter ({len(lora)} of its {len(names)} tensors are LoRA weights, e.g. {lora[0]}), "
            f"not a whole model. Give it as model.lora on top of the base pipeline it was trained for, e.g. "
            f"model: {{path: {base}, lora: {file}}} (model.single_file is for whole checkpoints: SD 1.x / 2.x / SDXL, SD3 / SD3.5, Flux)."
        )


def read_checkpoint(file: Path, allow_pickle: bool) -> dict[str, Any]:
    """Return the checkpoint's tensors by name; a pickle is read only when allowed, and never runs code."""
    import torch

    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(file))
    if not allow_pickle:
        raise TargetError(
            f"model.single_file {file}: a pickle checkpoint ({file.suffix}); loading a pickle can run arbitrary code, so naa-guard refuses it. "
            "Convert it to .safetensors, or set model.allow_pickle: true if you trust its origin."
        )
    from naa_guard.targets.modelcheck import pickle_load_error

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or code-carrying pickle; its weights_only advice is never passed on
        raise pickle_load_error(file, exc, "model.single_file ") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TargetError(f"model.single_file {file}: expected a state dict of tensors (optionally under 'state_dict'), found {type(state).__name__}.")
    check_not_lora([str(name) for name in state], file, None)
    return state


def _check_strict(module: Any, converted: dict[str, Any], name: str, file: Path) -> None:
    """Return None; raise TargetError unless ``converted`` holds exactly the module's tensors and shapes."""
    from naa_guard.targets.modelcheck import shape_differences

    missing, extra, reshaped = shape_differences(module, {k: tuple(v.shape) for k, v in converted.items()}, ignore_suffix="position_ids")
    if missing or extra or reshaped:
        raise TargetError(
            f"model.single_file {file}: its {name} weights do not match the {type(module).__name__} that model.config describes: "
            f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, {len(reshaped)} reshaped {reshaped[:5]}. A missing tensor would stay "
            "random; point model.config at a folder of the checkpoint's own architecture (SD 1.x / 2.x / SDXL, same sizes)."
        )


def _text_encoder(name: str, folder: Path, checkpoint: dict[str, Any], transformers: Any, file: Path) -> Any:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    from naa_guard.targets.base import read_json

    class_name = (read_json(folder / "config.json").get("architectures") or ["CLIPTextModel"])[0]
    cls = getattr(transformers, class_name)
    module = cls(cls.config_class.from_pretrained(folder, local_files_only=True))
    open_clip = _OPEN_CLIP_PREFIXES[name]
    if name == "text_encoder" and any(k.startswith(_CLIP_PREFIXES) for k in checkpoint):
        converted = convert_ldm_clip_checkpoint(checkpoint)
    elif any(k.startswith(open_clip) for k in checkpoint):
        converted = convert_open_clip_checkpoint(module, checkpoint, prefix=open_clip)
    else:
        raise TargetError(f"model.single_file {file}: no {name} weights (no key starts with {', '.join(_CLIP_PREFIXES) if name == 'text_encoder' else open_clip}); the checkpoint does not hold this pipeline's text encoder.")
    if not hasattr(module, "text_model"):  # transformers' flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    _check_strict(module, converted, name, file)
    module.load_state_dict(converted, strict=False)  # only position_ids buffers can be left: checked above
    return module.eval()


def load_single_file_target(info: SingleFileInfo, *, allow_pickle: bool, device: str, dtype: str) -> LatentTarget:
    """Return the single-file model loaded offline and strictly, components configured by ``info.root``."""
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    file = info.single_file
    assert file is not None  # set by read_single_file_info
    checkpoint = read_checkpoint(file, allow_pickle)
    convert = {"unet": (diffusers.UNet2DConditionModel, convert_ldm_unet_checkpoint), "vae": (diffusers.AutoencoderKL, convert_ldm_vae_checkpoint)}

    def load(name: str, folder: Path, transformers: Any, allow_pickle: bool) -> Any:
        if name.startswith("tokenizer"):
            return load_component(name, folder, transformers, allow_pickle)
        if name.startswith("text_encoder"):
            return _text_encoder(name, folder, checkpoint, transformers, file)
        cls, to_diffusers = convert[name]
        with offline_environment():
            try:
                module = cls.from_single_file(checkpoint, config=str(info.root), subfolder=folder.name, local_files_only=True, low_cpu_mem_usage=False)
            except Exception as exc:  # diffusers' SingleFileComponentError is a bare Exception
                raise TargetError(f"model.single_file {file}: diffusers could not load its {name} ({type(exc).__name__}: {exc}). Check that model.config matches the checkpoint.") from None
        _check_strict(module, to_diffusers(checkpoint, module.config), name, file)
        return module

    return load_latent_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype, load=load)
