"""What every attack shares: per-sample seeded noise, the deterministic DDIM step, distances.

Imported lazily (inside ``score``) so that loading a policy never imports torch.
"""

from __future__ import annotations

import hashlib

import torch

from naa_guard.attacks.keys import ROLE_CODES, ROLE_STRIDE


def sample_keys(role: str, indices: "list[int] | torch.Tensor") -> torch.Tensor:
    """Return the int64 noise keys of samples of ``role`` at these source indices (as :func:`~naa_guard.attacks.keys.sample_keys_array`)."""
    base = ROLE_CODES[role] * ROLE_STRIDE
    return torch.as_tensor(indices, dtype=torch.int64) + base


def _stream_seed(seed: int, key: int, stream: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{key}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seeded_noise(
    keys: torch.Tensor, shape: tuple[int, ...], seed: int, stream: str, device: torch.device
) -> torch.Tensor:
    """Return standard-normal noise of ``(len(keys), *shape)``, one independent draw per key.

    Drawn on the CPU from a generator seeded by (seed, key, stream), so the noise of a sample is
    the same whatever the batch, the batch size or the device.
    """
    generator = torch.Generator(device="cpu")
    draws = []
    for key in keys.tolist():
        generator.manual_seed(_stream_seed(seed, int(key), stream))
        draws.append(torch.randn(shape, generator=generator, dtype=torch.float32))
    return torch.stack(draws).to(device)


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor
) -> torch.Tensor:
    """Return the deterministic DDIM move of ``x`` from one timestep to another.

    ``x0_hat = (x - sqrt(1 - a_from) eps) / sqrt(a_from)``, then
    ``x' = sqrt(a_to) x0_hat + sqrt(1 - a_to) eps``. Moving to a larger timestep is the DDIM
    inversion step; to a smaller one, the denoising step.
    """
    x0_hat = (x - (1 - abar_from).sqrt() * eps) / abar_from.sqrt()
    return abar_to.sqrt() * x0_hat + (1 - abar_to).sqrt() * eps


def forward_noise(x0: torch.Tensor, abar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Return ``sqrt(abar) x0 + sqrt(1 - abar) eps``: the closed-form forward noising."""
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def sample_distance(a: torch.Tensor, b: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Return ``sum |a - b|^p`` over each sample's elements, as float64 on the CPU.

    ``p = 2`` is the squared L2 distance the loss and SecMI attacks use; PIA uses ``p = 4``.
    """
    difference = (a.to("cpu", torch.float64) - b.to("cpu", torch.float64)).flatten(start_dim=1)
    return difference.abs().pow(p).sum(dim=1)


def predict_at_clean_input(target: object, x0: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
    """Return the target's noise estimate with the clean ``x0`` fed to the model as it is, at timestep ``t`` (SimA).

    For a DDPM target that is ``predict_noise(x0, t)``. A flow target's ``predict_noise`` maps its
    input from the DDPM path onto the flow path; its ``predict_noise_clean`` feeds ``x0`` unscaled:
    ``e_hat = z0 + (1 - s) v_hat(z0, s)`` (SPEC section 3b).
    """
    clean = getattr(target, "predict_noise_clean", None)
    return clean(x0, t, cond) if callable(clean) else target.predict_noise(x0, t, cond)  # type: ignore[attr-defined]
