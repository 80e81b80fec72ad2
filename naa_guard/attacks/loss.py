"""Loss attack: the model's denoising error at one timestep (Matsumoto et al. 2023; Hu & Pang 2023).

Noise an image to timestep ``t`` in closed form with seeded noise ``e`` and ask the model for that
noise back: a model predicts the noise of its training images more accurately. One query per
sample. Specification: SPEC section 2.

Score: ``-||eps_theta(x_t, t) - e||^2`` (float64), so a smaller error, i.e. "member", scores higher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from naa_guard.attacks.base import Attack, AttackParams

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target


class LossParams(AttackParams):
    """The loss attack's parameters; defaults as in SPEC section 2."""

    t: int = Field(200, ge=0, le=10_000, description="timestep at which the denoising error is measured")


class LossAttack(Attack):
    """Denoising loss at one timestep: a small error = member."""

    name = "loss"
    paper = "Matsumoto et al. 2023, arXiv 2301.09956; Hu & Pang 2023, arXiv 2301.11351"
    Params = LossParams
    params: LossParams

    @property
    def queries_per_sample(self) -> int:
        return 1

    @property
    def max_timestep(self) -> int:
        return self.params.t

    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        from naa_guard.attacks.common import forward_noise, sample_distance, seeded_noise

        t = self.params.t
        noise = seeded_noise(sample_keys, tuple(x0.shape[1:]), seed, "loss.noise", x0.device)
        x_t = forward_noise(x0, target.alphas_cumprod[t], noise)
        distance = sample_distance(target.predict_noise(x_t, t, cond), noise)
        weight = getattr(target, "loss_weight", None)  # a flow target: |e_hat - e|^2 / (1 - s)^2 is the flow-matching loss (SPEC 3b)
        return -(distance * weight(t) if callable(weight) else distance)
