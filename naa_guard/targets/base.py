"""What every model family shares: the Target protocol, device resolution, offline loading, the probe.

A :class:`Target` is the model under audit as the attacks see it: ``encode(images, captions)``
turns a batch of preprocessed images (and their conditioning text) into the diffusion space and
its condition, ``predict_noise(x, t, cond)`` gives the epsilon prediction there, and
``alphas_cumprod`` is the noise schedule. ``sample_size`` and ``in_channels`` are the geometry of
the *images* the data loader prepares (for a latent model, the pixels the VAE takes).

Two optional members let a flow-matching target (:mod:`~naa_guard.targets.flow`) serve the same
attacks through its one conversion, without an attack asking which family it runs on:
``predict_noise_clean(x0, t, cond)`` (the estimate at the clean input, for SimA:
:func:`naa_guard.attacks.common.predict_at_clean_input`) and ``loss_weight(t)`` (the factor that
turns the noise error into the family's own training loss, for the loss attack). A DDPM target
has neither, and the attacks then use ``predict_noise`` and weight 1.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from naa_guard.errors import EnvironmentUnavailableError, NonFiniteScoreError, TargetError
from naa_guard.targets.modelcheck import read_json_object

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import torch

SAFE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Model calls are padded to a multiple of this many samples. Batched kernels may round a sample's
# output differently for different batch shapes (about 1e-6); padding keeps the shapes in a
# family whose per-sample results match, so CPU scores are identical whatever runtime.batch_size
# is. On CUDA, cuDNN picks kernels per shape and scores differ by about 1e-3 (H200, measured).
PAD_MULTIPLE = 16
# Set by the probe (see unpadded_model_calls): its one test image goes through the model alone.
_UNPADDED: ContextVar[bool] = ContextVar("naa_guard_unpadded", default=False)
# Set while a model loads: diffusers and huggingface_hub then never try the network, even for a
# folder that looks like a hub id or a config that names a remote file.
OFFLINE_VARIABLES = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


class Target(Protocol):
    """What an attack needs from a model."""

    alphas_cumprod: torch.Tensor  # float32, on the target's device
    sample_size: int  # square image size the data loader prepares
    in_channels: int  # image channels the data loader prepares
    device: torch.device

    def encode(self, images: torch.Tensor, captions: Sequence[str | None]) -> tuple[torch.Tensor, Any]:
        """Return ``(x0, cond)``: the images in the model's diffusion space and their condition."""

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the model's epsilon prediction (float32) for ``x`` at timestep ``t`` given ``cond``."""


class ImageSpaceTarget:
    """An old-protocol target (``predict_noise(x, t)``, no ``encode``) seen through the new protocol.

    Its diffusion space is the image itself and it takes no condition. Every other attribute
    (counters included) is the wrapped target's.
    """

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def encode(self, images: torch.Tensor, captions: Sequence[str | None]) -> tuple[torch.Tensor, None]:
        """Return the images unchanged and no condition."""
        return images, None

    def predict_noise(self, x: torch.Tensor, t: int, cond: Any = None) -> torch.Tensor:
        """Return the wrapped target's prediction; ``cond`` is always None here."""
        return self.inner.predict_noise(x, t)


def as_target(target: Any) -> Target:
    """Return ``target`` in the current protocol: targets without ``encode`` are wrapped."""
    return target if hasattr(target, "encode") else ImageSpaceTarget(target)  # type: ignore[return-value]


def read_json(path: Path) -> dict[str, Any]:
    """Return a JSON config file's object; raise TargetError when it cannot be read or is not an object."""
    return read_json_object(path)


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


def padding_rows(count: int) -> int:
    """Return the zero rows a model call of ``count`` samples is padded with (to a multiple of PAD_MULTIPLE; none in the probe)."""
    return 0 if _UNPADDED.get() else -count % PAD_MULTIPLE


@contextmanager
def unpadded_model_calls() -> Iterator[None]:
    """Within the block the targets call their networks on exactly the rows given (the probe: one image, no padding).

    Padding only makes scores independent of the batch size; the probe's output is never scored.
    """
    token = _UNPADDED.set(True)
    try:
        yield
    finally:
        _UNPADDED.reset(token)


def raise_if_non_finite(out: torch.Tensor, t: int) -> None:
    """Return None; raise NonFiniteScoreError (with the bad batch rows) for NaN or inf predictions."""
    import torch

    bad = ~torch.isfinite(out.flatten(start_dim=1)).all(dim=1)
    if bad.any():
        error = NonFiniteScoreError(
            f"the model returned NaN or infinite noise predictions at timestep {t} for "
            f"{int(bad.sum())} of {out.shape[0]} samples of the batch. "
            f"Check the checkpoint (a diverged or fp16-overflowing model), or use runtime.dtype: float32."
        )
        error.batch_rows = bad.nonzero().flatten().tolist()  # type: ignore[attr-defined]  # mapped to sample names by the caller
        raise error


def probe_target(target: Target, where: str, *, predict: bool = True) -> float:
    """Return the probe's seconds; raise TargetError if the model cannot take a batch of its own declared geometry.

    ``predict=False``: the target encodes only (a flow model's text encoders and VAE, before its
    transformer loads). A target with ``probe_inputs(images)`` gives its own ``(x0, cond)`` (a
    flow model's transformer without its text encoders: a zero condition of the stored shape).

    One zero image is encoded and its noise predicted at timestep 0, unpadded (one image through
    the VAE and one UNet query: the cost of a query, not of a batch), before any scoring, so that
    a model whose ``sample_size`` / ``in_channels`` do not fit its layers fails with a clear
    message instead of mid-audit. The target's call counters are restored: they measure the
    attacks' cost.
    """
    import torch

    counters = {name: getattr(target, name) for name in ("forward_calls", "sample_queries", "encoded_images", "encoded_texts") if hasattr(target, name)}
    shape = (1, target.in_channels, target.sample_size, target.sample_size)
    geometry = f"in_channels {target.in_channels}, sample_size {target.sample_size}"
    x0: Any = None
    started = time.perf_counter()
    try:
        with unpadded_model_calls():
            inputs = getattr(target, "probe_inputs", None)
            zeros = torch.zeros(shape, device=target.device)
            x0, cond = inputs(zeros) if callable(inputs) else target.encode(zeros, [""])
            out = target.predict_noise(x0, 0, cond) if predict else x0
    except NonFiniteScoreError:
        return time.perf_counter() - started  # the forward pass itself worked; scoring reports the bad outputs with attack and sample names
    except TargetError:
        raise
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
    seconds = time.perf_counter() - started
    expected = tuple(getattr(x0, "shape", ()))
    if tuple(getattr(out, "shape", ())) != expected:
        raise TargetError(
            f"{where}: for an encoded batch of shape {expected} ({geometry}) the model predicts shape "
            f"{tuple(getattr(out, 'shape', ()))}; the attacks need a noise prediction of the input's shape. "
            f"Models that also predict the variance (out_channels = 2 x in_channels) are not supported yet."
        )
    return seconds


def check_component_weights(folder: Path, allow_pickle: bool, safe_names: tuple[str, ...] = SAFE_WEIGHTS, variant: str | None = None) -> tuple[bool, str | None]:
    """Return (use_safetensors, variant) for a component folder under ``model.variant``, refusing pickle weights unless allowed.

    Which files load is :func:`naa_guard.targets.variants.choose_weights`' rule: the variant's files when
    ``variant`` is set, else the plain ones (a folder with weights only as a variant is an error naming it).
    """
    from naa_guard.targets.variants import choose_weights

    choice = choose_weights(folder, variant, "transformers" if safe_names[0].startswith("model.") else "diffusers")
    if not choice.use_safetensors and not allow_pickle:
        raise TargetError(
            f"{folder}: only pickle weights found ({', '.join(p.name for p in choice.files)}); loading a pickle can "
            f"run arbitrary code, so naa-guard refuses it. Convert the weights to safetensors "
            f"(save_pretrained(..., safe_serialization=True)), or set model.allow_pickle: true if you "
            f"trust this file."
        )
    return choice.use_safetensors, choice.variant




def scheduler_class(scheduler_dir: Path, scheduler_config: dict[str, Any]) -> Any:
    """Return the diffusers scheduler class the config names; only diffusers' own schedulers load."""
    import diffusers

    name = str(scheduler_config.get("_class_name", "DDPMScheduler"))
    found = getattr(diffusers, name, None)
    if not (isinstance(found, type) and issubclass(found, diffusers.SchedulerMixin)):
        raise TargetError(
            f"{scheduler_dir}/scheduler_config.json: _class_name {name!r} is not a diffusers scheduler. "
            f"Save the scheduler with save_pretrained (e.g. DDPMScheduler or DDIMScheduler); custom code "
            f"only runs through model.loader."
        )
    return found
