"""Targets: the model under audit, as a noise predictor with its noise schedule.

A :class:`Target` is anything with ``alphas_cumprod``, ``sample_size``, ``in_channels`` and
``predict_noise(x_t, t)``. :func:`load_target` builds one from a local pixel-space diffusers folder
(a pipeline folder with ``model_index.json``, or bare ``unet/`` + ``scheduler/`` subfolders),
offline, from safetensors unless the policy allows pickle files.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from naa_guard.errors import EnvironmentUnavailableError, NonFiniteScoreError, TargetError
from naa_guard.modelcheck import (
    check_alphas_cumprod, check_config_types, check_model_index, check_model_index_classes, check_scheduler_config,
    check_unet_config, check_weights_match, read_json_object, weight_files_for, weight_shapes,
)  # fmt: skip

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

SAFE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PREDICTION_TYPES = ("epsilon", "v_prediction")
# Model calls are padded to a multiple of this many samples. Batched kernels may round a sample's
# output differently for different batch shapes (about 1e-6); padding keeps the shapes in a
# family whose per-sample results match, so CPU scores are identical whatever runtime.batch_size
# is. On CUDA, cuDNN picks kernels per shape and scores differ by about 1e-3 (H200, measured).
PAD_MULTIPLE = 16
# Set while a model loads: diffusers and huggingface_hub then never try the network, even for a
# folder that looks like a hub id or a config that names a remote file.
OFFLINE_VARIABLES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class Target(Protocol):
    """What an attack needs from a model."""

    alphas_cumprod: torch.Tensor  # float32, on the target's device
    sample_size: int
    in_channels: int
    device: torch.device

    def predict_noise(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Return the model's epsilon prediction (float32) for ``x`` at timestep ``t``."""


@dataclass(frozen=True)
class ModelInfo:
    """What can be read from a model folder without loading its weights."""

    root: Path
    unet_dir: Path
    scheduler_dir: Path
    unet_config: dict[str, Any]
    weight_files: tuple[Path, ...]
    sample_size: int
    in_channels: int


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path)


def read_model_info(path: Path, unet_subfolder: str | None = None) -> ModelInfo:
    """Return the model folder's layout and UNet geometry, without importing torch."""
    root = Path(path)
    if not root.is_dir():
        raise TargetError(
            f"model folder {root} does not exist or is not a folder. Point model.path at a diffusers "
            f"folder (with model_index.json, or unet/ and scheduler/ subfolders), relative to the policy file."
        )
    index = root / "model_index.json"
    if index.is_file() and "vae" in check_model_index(_read_json(index), index):
        raise TargetError(
            f"{root}: this is a latent diffusion pipeline (model_index.json lists a vae); naa-guard "
            f"audits pixel-space models (e.g. DDPMPipeline folders) only for now."
        )
    unet_dir = root / (unet_subfolder or "unet")
    scheduler_dir = root / "scheduler"
    for needed, key in ((unet_dir, "model.unet_subfolder" if unet_subfolder else "model.path"), (scheduler_dir, "model.path")):
        if not needed.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise TargetError(
                f"{root}: missing subfolder {needed.name}/ (found: {', '.join(present) or 'no subfolders'}). "
                f"A diffusers model folder needs unet/ (or the folder named by model.unet_subfolder) and "
                f"scheduler/; check {key}, or save the pipeline with save_pretrained."
            )
    config_file = unet_dir / "config.json"
    if not config_file.is_file():
        raise TargetError(f"{unet_dir}: no config.json. Save the UNet with save_pretrained.")
    config = _read_json(config_file)
    if not (scheduler_dir / "scheduler_config.json").is_file():
        raise TargetError(f"{scheduler_dir}: no scheduler_config.json. Save the scheduler with save_pretrained.")
    check_unet_config(config, config_file)
    check_scheduler_config(_read_json(scheduler_dir / "scheduler_config.json"), scheduler_dir / "scheduler_config.json")
    sample_size = config.get("sample_size")
    if isinstance(sample_size, (list, tuple)):
        if len(set(sample_size)) != 1:
            raise TargetError(f"{config_file}: non-square sample_size {sample_size} is not supported; only square images.")
        sample_size = sample_size[0]
    if not isinstance(sample_size, int) or sample_size < 1:
        raise TargetError(
            f"{config_file}: sample_size is {sample_size!r}; expected a positive int so images can be "
            f"resized to the model's input. Set it in the UNet config."
        )
    in_channels = config.get("in_channels")
    if not isinstance(in_channels, int) or in_channels not in (1, 3):
        raise TargetError(f"{config_file}: in_channels is {in_channels!r}; expected 1 (grayscale) or 3 (RGB) image channels.")
    weights = tuple(sorted(p for p in unet_dir.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES)))
    return ModelInfo(root, unet_dir, scheduler_dir, config, weights, sample_size, in_channels)


def resolve_device(requested: str) -> torch.device:
    """Return the torch device for ``auto`` (cuda, then mps, then cpu) or an explicit name."""
    import torch

    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnvironmentUnavailableError(
                f"runtime.device is {requested!r} but this machine has no CUDA device. Use device: auto "
                f"(falls back to the CPU) or run where a GPU is available."
            )
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise EnvironmentUnavailableError(
                f"runtime.device is {requested!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    if requested == "mps" and not has_mps:
        raise EnvironmentUnavailableError("runtime.device is 'mps' but MPS is not available here. Use device: auto.")
    return torch.device(requested)


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

    def predict_noise(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Return the epsilon prediction (float32) at integer timestep ``t``; v is converted."""
        import torch

        count = x.shape[0]
        padded = -count % PAD_MULTIPLE
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
        bad = ~torch.isfinite(out.flatten(start_dim=1)).all(dim=1)
        if bad.any():
            error = NonFiniteScoreError(
                f"the model returned NaN or infinite noise predictions at timestep {t} for "
                f"{int(bad.sum())} of {x.shape[0]} samples of the batch. "
                f"Check the checkpoint (a diverged or fp16-overflowing model), or use runtime.dtype: float32."
            )
            error.batch_rows = bad.nonzero().flatten().tolist()  # type: ignore[attr-defined]  # mapped to sample names by the caller
            raise error
        return out


@contextmanager
def offline_environment() -> Iterator[None]:
    """Run the enclosed model loading with the Hugging Face libraries forced offline."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update(OFFLINE_VARIABLES)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def probe_target(target: Target, where: str) -> None:
    """Return None; raise TargetError if the model cannot take a batch of its own declared geometry.

    One forward pass on a zero image at timestep 0, before any scoring, so that a UNet whose
    ``sample_size`` / ``in_channels`` do not fit its layers fails with a clear message instead
    of mid-audit. The target's call counters are restored: they measure the attacks' cost.
    """
    import torch

    counters = {name: getattr(target, name) for name in ("forward_calls", "sample_queries") if hasattr(target, name)}
    shape = (1, target.in_channels, target.sample_size, target.sample_size)
    geometry = f"in_channels {target.in_channels}, sample_size {target.sample_size}"
    try:
        out = target.predict_noise(torch.zeros(shape, device=target.device), 0)
    except NonFiniteScoreError:
        return  # the forward pass itself worked; scoring reports the bad outputs with attack and sample names
    except Exception as exc:  # a shape mismatch surfaces as RuntimeError, ValueError, ... from inside the network
        raise TargetError(
            f"{where}: the model cannot take images of its declared geometry ({geometry}): a "
            f"{'x'.join(map(str, shape[1:]))} test batch fails with {type(exc).__name__}: {(str(exc).splitlines() or [''])[0].rstrip('.')}. "
            f"Fix the UNet config (sample_size must suit the number of down blocks, in_channels must "
            f"match the first convolution's weights) or re-save the model with save_pretrained."
        ) from None
    finally:
        for name, value in counters.items():
            setattr(target, name, value)
    if tuple(getattr(out, "shape", ())) != shape:
        raise TargetError(
            f"{where}: for a batch of shape {shape} ({geometry}) the model predicts shape "
            f"{tuple(getattr(out, 'shape', ()))}; the attacks need a noise prediction of the input's shape. "
            f"Models that also predict the variance (out_channels = 2 x in_channels) are not supported yet."
        )


def _check_weights(info: ModelInfo, allow_pickle: bool) -> tuple[bool, str | None]:
    """Return (use_safetensors, variant), refusing pickle weights unless allowed."""
    names = {p.name for p in info.weight_files}
    if SAFE_WEIGHTS[0] in names:
        return True, None
    if SAFE_WEIGHTS[1] in names:
        return True, "fp16"
    pickles = sorted(p.name for p in info.weight_files if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise TargetError(
            f"{info.unet_dir}: only pickle weights found ({', '.join(pickles)}); loading a pickle can "
            f"run arbitrary code, so naa-guard refuses it. Convert the weights to safetensors "
            f"(save_pretrained(..., safe_serialization=True)), or set model.allow_pickle: true if you "
            f"trust this file."
        )
    if not pickles:
        raise TargetError(
            f"{info.unet_dir}: no weights found; expected {SAFE_WEIGHTS[0]}. Save the UNet with save_pretrained."
        )
    return False, "fp16" if any(".fp16." in name for name in pickles) and not any(".fp16." not in n for n in pickles) else None


def _scheduler_class(info: ModelInfo, scheduler_config: dict[str, Any]) -> Any:
    """Return the diffusers scheduler class the config names; only diffusers' own schedulers load."""
    import diffusers

    name = str(scheduler_config.get("_class_name", "DDPMScheduler"))
    found = getattr(diffusers, name, None)
    if not (isinstance(found, type) and issubclass(found, diffusers.SchedulerMixin)):
        raise TargetError(
            f"{info.scheduler_dir}/scheduler_config.json: _class_name {name!r} is not a diffusers scheduler. "
            f"Save the scheduler with save_pretrained (e.g. DDPMScheduler or DDIMScheduler); custom code "
            f"only runs through model.loader."
        )
    return found


def load_target(info: ModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> DiffusersTarget:
    """Return the loaded target for a model folder, offline, on the requested device and dtype."""
    import diffusers
    import torch

    torch_device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    use_safetensors, variant = _check_weights(info, allow_pickle)
    unet_class = getattr(diffusers, str(info.unet_config.get("_class_name", "UNet2DModel")), None)
    if unet_class is not diffusers.UNet2DModel:
        raise TargetError(
            f"{info.unet_dir}: UNet class {info.unet_config.get('_class_name')!r} is not supported; "
            f"naa-guard audits pixel-space UNet2DModel checkpoints."
        )
    scheduler_config = _read_json(info.scheduler_dir / "scheduler_config.json")
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise TargetError(
            f"{info.scheduler_dir}: prediction_type {prediction_type!r} is not supported; "
            f"expected one of {', '.join(PREDICTION_TYPES)} (the attacks need a noise prediction)."
        )
    scheduler_class = _scheduler_class(info, scheduler_config)
    check_config_types(info.unet_config, unet_class, info.unet_dir / "config.json")
    check_config_types(scheduler_config, scheduler_class, info.scheduler_dir / "scheduler_config.json")
    if (info.root / "model_index.json").is_file():
        declared = {info.unet_dir.name: info.unet_config.get("_class_name"), "scheduler": scheduler_config.get("_class_name")}
        check_model_index_classes(check_model_index(_read_json(info.root / "model_index.json"), info.root / "model_index.json"), info.root / "model_index.json", declared)
    weight_files = weight_files_for(info.unet_dir, use_safetensors, variant)
    weight_shapes(weight_files)  # a corrupt file is named here, not in diffusers' generic error
    previous_verbosity = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # its hints (install accelerate, ...) are noise in a gate's output
    try:
        with offline_environment():
            unet = unet_class.from_pretrained(
                info.unet_dir, local_files_only=True, use_safetensors=use_safetensors, variant=variant,
                torch_dtype=torch_dtype, low_cpu_mem_usage=False,
            )
            scheduler = scheduler_class.from_pretrained(info.scheduler_dir, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        # diffusers' own hint (ignore_mismatched_sizes=True) would load a broken model: drop it.
        detail = " ".join(line.strip() for line in str(exc).splitlines() if "ignore_mismatched_sizes" not in line)
        raise TargetError(
            f"{info.root}: loading the model failed: {detail} Check that {info.unet_dir.name}/config.json "
            f"matches the weights (in_channels {info.in_channels}, sample_size {info.sample_size}), or "
            f"re-save the model with save_pretrained."
        ) from None
    finally:
        diffusers.logging.set_verbosity(previous_verbosity)
    check_weights_match(unet, weight_files, info.unet_dir)
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise TargetError(f"{info.scheduler_dir}: scheduler {type(scheduler).__name__} has no alphas_cumprod schedule.")
    check_alphas_cumprod(alphas_cumprod, f"{info.scheduler_dir}/scheduler_config.json")
    return DiffusersTarget(unet, torch.as_tensor(alphas_cumprod), prediction_type, torch_device, torch_dtype)
