"""Pixel-space diffusion models: a diffusers ``UNet2DModel`` and its scheduler.

:func:`read_pixel_info` reads a local folder (a pipeline folder with ``model_index.json``, e.g. a
``DDPMPipeline``, or bare ``unet/`` + ``scheduler/`` subfolders) without loading weights, and
:func:`load_pixel_target` loads it offline, from safetensors unless the policy allows pickle
files. The diffusion space is the image itself and the model takes no condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import check_component_weights, offline_environment, padding_rows, raise_if_non_finite, read_json, resolve_device, scheduler_class
from naa_guard.targets.modelcheck import (
    check_alphas_cumprod,
    check_config_types,
    check_model_index,
    check_model_index_classes,
    check_scheduler_config,
    check_unet_config,
    check_weights_match,
    weight_shapes,
)
from naa_guard.targets.variants import choose_weights, weight_files_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class ModelInfo:
    """What can be read from a pixel model folder without loading its weights."""

    root: Path
    unet_dir: Path
    scheduler_dir: Path
    unet_config: dict[str, Any]
    weight_files: tuple[Path, ...]
    sample_size: int
    in_channels: int
    variant: str | None = None  # model.variant: the precision variant whose weight files load

    def identity_files(self) -> list[Path]:
        """Return the files whose content identifies this model (for score cache keys)."""
        return [*self.weight_files, self.unet_dir / "config.json", self.scheduler_dir / "scheduler_config.json"]

    def identity_material(self) -> dict[str, Any]:
        """Return what besides the files changes the scores: nothing for a pixel model."""
        return {}

    def size_source(self) -> str:
        """Return where the model's image size comes from: its config file and key."""
        return f"sample_size {self.sample_size} in {self.unet_dir / 'config.json'}"


def read_pixel_info(root: Path, unet_subfolder: str | None = None, *, key: str = "model.path", variant: str | None = None) -> ModelInfo:
    """Return a pixel model folder's layout and UNet geometry, without importing torch (``key``: the policy key of ``root``)."""
    unet_dir = root / (unet_subfolder or "unet")
    scheduler_dir = root / "scheduler"
    for needed, check in ((unet_dir, "model.unet_subfolder" if unet_subfolder else key), (scheduler_dir, key)):
        if not needed.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise TargetError(
                f"{root}: missing subfolder {needed.name}/ (found: {', '.join(present) or 'no subfolders'}). "
                f"A diffusers model folder needs unet/ (or the folder named by model.unet_subfolder) and "
                f"scheduler/; check {check}, or save the pipeline with save_pretrained."
            )
    config_file = unet_dir / "config.json"
    if not config_file.is_file():
        raise TargetError(f"{unet_dir}: no config.json. Save the UNet with save_pretrained.")
    config = read_json(config_file)
    if not (scheduler_dir / "scheduler_config.json").is_file():
        raise TargetError(f"{scheduler_dir}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    check_unet_config(config, config_file)
    check_scheduler_config(read_json(scheduler_dir / "scheduler_config.json"), scheduler_dir / "scheduler_config.json")
    sample_size = square_sample_size(config, config_file)
    in_channels = config.get("in_channels")
    if not isinstance(in_channels, int) or in_channels not in (1, 3):
        raise TargetError(f"{config_file}: in_channels is {in_channels!r}; expected 1 (grayscale) or 3 (RGB) image channels.")
    return ModelInfo(root, unet_dir, scheduler_dir, config, choose_weights(unet_dir, variant).identity, sample_size, in_channels, variant)


def square_sample_size(config: dict[str, Any], config_file: Path) -> int:
    """Return a UNet config's square ``sample_size``; raise TargetError for anything else."""
    sample_size = config.get("sample_size")
    if isinstance(sample_size, (list, tuple)):
        if len(set(sample_size)) != 1:
            raise TargetError(f"{config_file}: non-square sample_size {sample_size} is not supported; only square images.")
        sample_size = sample_size[0]
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1:
        raise TargetError(
            f"{config_file}: sample_size is {sample_size!r}; expected a positive int so images can be "
            f"resized to the model's input. Set it in the UNet config."
        )
    return sample_size


class DiffusersTarget:
    """A pixel-space diffusers UNet and its scheduler's noise schedule."""

    def __init__(self, unet: Any, alphas_cumprod: torch.Tensor, prediction_type: str, device: torch.device, dtype: torch.dtype) -> None:
        import torch

        if next(unet.parameters()).dtype != dtype:
            unet = unet.to(dtype=dtype)
        self.unet = unet.to(device=device).eval()
        self.device = device
        self.dtype = dtype
        self.alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
        self.prediction_type = prediction_type
        self.sample_size = int(self.unet.config.sample_size if isinstance(self.unet.config.sample_size, int) else self.unet.config.sample_size[0])
        self.in_channels = int(self.unet.config.in_channels)
        self.forward_calls = 0  # model forward passes, one per batch
        self.sample_queries = 0  # samples passed through the model, summed over calls

    def encode(self, images: torch.Tensor, captions: Sequence[str | None]) -> tuple[torch.Tensor, None]:
        """Return the images unchanged (pixel space) and no condition: the UNet takes none."""
        return images, None

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the epsilon prediction (float32) at integer timestep ``t``; v is converted; ``cond`` is unused."""
        import torch

        count = x.shape[0]
        padded = padding_rows(count)
        model_input = x.to(self.dtype)
        if padded:
            model_input = torch.cat([model_input, model_input.new_zeros((padded, *x.shape[1:]))])
        timesteps = torch.full((count + padded,), int(t), device=self.device, dtype=torch.long)
        with torch.inference_mode():
            out = self.unet(model_input, timesteps).sample[:count].float()
        self.forward_calls += 1
        self.sample_queries += x.shape[0]
        if self.prediction_type == "v_prediction":
            abar = self.alphas_cumprod[int(t)]
            out = abar.sqrt() * out + (1 - abar).sqrt() * x
        raise_if_non_finite(out, t)
        return out


def load_pixel_target(info: ModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> DiffusersTarget:
    """Return the loaded pixel target for a model folder, offline, on the requested device and dtype."""
    import diffusers
    import torch

    torch_device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    use_safetensors, variant = check_component_weights(info.unet_dir, allow_pickle, variant=info.variant)
    unet_class = getattr(diffusers, str(info.unet_config.get("_class_name", "UNet2DModel")), None)
    if unet_class is not diffusers.UNet2DModel:
        raise TargetError(
            f"{info.unet_dir}: UNet class {info.unet_config.get('_class_name')!r} is not supported; "
            f"naa-guard audits pixel-space UNet2DModel checkpoints."
        )
    scheduler_config = read_json(info.scheduler_dir / "scheduler_config.json")
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise TargetError(
            f"{info.scheduler_dir}: prediction_type {prediction_type!r} is not supported; "
            f"expected one of {', '.join(PREDICTION_TYPES)} (the attacks need a noise prediction)."
        )
    scheduler_cls = scheduler_class(info.scheduler_dir, scheduler_config)
    check_config_types(info.unet_config, unet_class, info.unet_dir / "config.json")
    check_config_types(scheduler_config, scheduler_cls, info.scheduler_dir / "scheduler_config.json")
    index_file = info.root / "model_index.json"
    if index_file.is_file():
        declared = {info.unet_dir.name: info.unet_config.get("_class_name"), "scheduler": scheduler_config.get("_class_name")}
        check_model_index_classes(check_model_index(read_json(index_file), index_file), index_file, declared)
    unet_weights = weight_files_for(info.unet_dir, use_safetensors, variant)
    weight_shapes(unet_weights)  # a corrupt file is named here, not in diffusers' generic error
    previous_verbosity = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # its hints (install accelerate, ...) are noise in a gate's output
    try:
        with offline_environment():
            unet = unet_class.from_pretrained(
                info.unet_dir, local_files_only=True, use_safetensors=use_safetensors, variant=variant,
                torch_dtype=torch_dtype, low_cpu_mem_usage=False,
            )
            scheduler = scheduler_cls.from_pretrained(info.scheduler_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        from naa_guard.targets.loaderror import load_error_detail

        detail = load_error_detail(exc)  # diffusers' own hint (ignore_mismatched_sizes=True) would load a broken model: dropped
        raise TargetError(
            f"{info.root}: loading the model failed: {detail} Check that {info.unet_dir.name}/config.json "
            f"matches the weights (in_channels {info.in_channels}, sample_size {info.sample_size}), or "
            f"re-save the model with save_pretrained."
        ) from None
    finally:
        diffusers.logging.set_verbosity(previous_verbosity)
    check_weights_match(unet, unet_weights, info.unet_dir)
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise TargetError(f"{info.scheduler_dir}: scheduler {type(scheduler).__name__} has no alphas_cumprod schedule.")
    check_alphas_cumprod(alphas_cumprod, f"{info.scheduler_dir}/scheduler_config.json")
    return DiffusersTarget(unet, torch.as_tensor(alphas_cumprod), prediction_type, torch_device, torch_dtype)
