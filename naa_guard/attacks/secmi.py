"""SecMI-stat: the DDIM posterior-estimation error (Duan et al., ICML 2023, arXiv 2302.01316).

Invert an image deterministically with DDIM, ``0 -> interval -> ... -> t_sec - interval``, giving
``x_a``; take one more inversion step ``t_sec - interval -> t_sec`` and one denoising step straight
back, giving ``x_a'``. A model is self-consistent on its training images, so the round trip lands
closer to where it started. Queries per sample: ``t_sec / interval + 1`` (11 with the defaults).
Specification: SPEC section 2.

Score: ``-||x_a' - x_a||^2`` (float64), so a smaller round-trip error, i.e. "member", scores higher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from naa_guard.attacks.base import Attack, AttackParams

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target


class SecMIParams(AttackParams):
    """SecMI-stat's parameters; defaults as in SPEC section 2."""

    t_sec: int = Field(100, ge=1, le=10_000, description="timestep of the round trip's far end")
    interval: int = Field(10, ge=1, le=10_000, description="timestep gap of every DDIM step")

    @model_validator(mode="after")
    def _chain_lands_on_t_sec(self) -> SecMIParams:
        if self.t_sec % self.interval:
            below = self.t_sec - self.t_sec % self.interval
            hint = f"{below} or {below + self.interval}" if below else f"{self.interval}"
            raise ValueError(
                f"t_sec={self.t_sec} is not a multiple of interval={self.interval}: the inversion "
                f"chain 0, {self.interval}, {2 * self.interval}, ... must land on t_sec. Use t_sec {hint}, "
                f"or an interval that divides t_sec"
            )
        return self


class SecMI(Attack):
    """SecMI-stat: a small DDIM round-trip error at ``t_sec`` = member."""

    name = "secmi"
    paper = "Duan et al., Are Diffusion Models Vulnerable to Membership Inference Attacks?, ICML 2023, arXiv 2302.01316"
    Params = SecMIParams
    params: SecMIParams

    @property
    def queries_per_sample(self) -> int:
        return self.params.t_sec // self.params.interval + 1

    @property
    def max_timestep(self) -> int:
        return self.params.t_sec

    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        from naa_guard.attacks.common import ddim_step, sample_distance

        abar = target.alphas_cumprod
        t_sec, interval = self.params.t_sec, self.params.interval
        # Deterministic throughout: no noise is drawn, so ``seed`` and ``sample_keys`` are unused.
        x = x0
        for tau in range(0, t_sec - interval, interval):
            x = ddim_step(x, target.predict_noise(x, tau, cond), abar[tau], abar[tau + interval])
        start = t_sec - interval
        x_far = ddim_step(x, target.predict_noise(x, start, cond), abar[start], abar[t_sec])
        x_back = ddim_step(x_far, target.predict_noise(x_far, t_sec, cond), abar[t_sec], abar[start])
        return -sample_distance(x_back, x)
