"""Half precision (``runtime.dtype: float16 | bfloat16``): checked to work on the device before a model loads.

A latent model runs its UNet and text encoders in the policy's dtype and its VAE encoder always
in float32 (``targets/latent.py``; fp16 VAEs overflow); a pixel model runs its UNet in it. Whether
a device can compute in a half dtype depends on the torch build (CPU float16 convolutions came
late; MPS bfloat16 needs a recent macOS): a build that lacks a kernel would otherwise fail inside
the geometry probe with a message about the model's shape, or mid-audit. So the operations a
diffusion UNet and a CLIP text encoder are made of run once on a few numbers in that dtype first;
a failure, or a non-finite result, is a TargetError that names ``runtime.dtype`` and the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from naa_guard.errors import TargetError

if TYPE_CHECKING:
    import torch

HALF_DTYPES = ("float16", "bfloat16")


def _exercise(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Return the result of the layers' basic operations on a small input in ``dtype`` on ``device``."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, 8, 8, 8), generator=generator).to(device=device, dtype=dtype)
    weight = torch.randn((8, 8, 3, 3), generator=generator).to(device=device, dtype=dtype) * 0.1
    h = F.silu(F.group_norm(F.conv2d(x, weight, padding=1), 4))  # UNet resnet block
    h = F.interpolate(F.avg_pool2d(h, 2), scale_factor=2.0, mode="nearest")  # down- and up-sampling
    tokens = h.flatten(2).transpose(1, 2)  # (2, 64, 8): attention over positions
    tokens = F.layer_norm(tokens, (8,))
    attention = F.scaled_dot_product_attention(tokens[:, None], tokens[:, None], tokens[:, None], is_causal=True)  # CLIP is causal
    return F.gelu(F.linear(attention[:, 0], torch.eye(8, device=device, dtype=dtype))).float()


def check_dtype_supported(device: torch.device, dtype_name: str) -> None:
    """Return None; raise TargetError if ``device`` cannot run a diffusion model in ``dtype_name``.

    float32 is always supported and not checked.
    """
    if dtype_name not in HALF_DTYPES:
        return
    import torch

    fix = (
        "Use runtime.dtype: float32 in the policy file (or the other half dtype where it works), "
        "run on a device that supports it (runtime.device), or upgrade torch."
    )
    try:
        out = _exercise(device, getattr(torch, dtype_name))
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        first = (str(exc).splitlines() or [""])[0].rstrip(".")
        raise TargetError(
            f"runtime.dtype is {dtype_name} but torch {torch.__version__} cannot compute in {dtype_name} on {device} "
            f"({type(exc).__name__}: {first}). {fix}"
        ) from None
    if not bool(torch.isfinite(out).all()):
        raise TargetError(f"runtime.dtype is {dtype_name} but a test computation in {dtype_name} on {device} gave NaN or infinite values (expected finite). {fix}")
