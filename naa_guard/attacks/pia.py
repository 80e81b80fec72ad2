"""PIA and PIAN: proximal initialisation attacks (Kong et al., ICLR 2024, arXiv 2305.18355).

Ask the model for the noise of the clean image at timestep 0, ``e0 = eps_theta(x0, 0)``, use it
to noise the image to ``t`` in closed form, and ask again: on its training images a model
predicts back nearly the noise it started from. Two queries per sample. PIAN (``pian``) first
rescales ``e0`` to the mean absolute value of a standard normal, ``e0 * sqrt(2/pi) / mean|e0|``
per sample. Specification: SPEC section 2.

Score: ``-sum |e0 - eps_theta(x_t, t)|^p`` (float64), so a smaller error, i.e. "member", scores higher.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from naa_guard.attacks.base import Attack, AttackParams

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target


class PIAParams(AttackParams):
    """PIA's (and PIAN's) parameters; defaults as in SPEC section 2."""

    t: int = Field(200, ge=1, le=10_000, description="timestep of the second query")
    p: float = Field(4.0, ge=1, le=16, allow_inf_nan=False, description="exponent of the error: sum |e0 - eps|^p; at least 1 (a smaller p flattens every |x|^p toward 1)")


class PIA(Attack):
    """Proximal initialisation: a small gap between the timestep-0 noise and its re-prediction = member."""

    name = "pia"
    paper = "Kong et al., An Efficient Membership Inference Attack for the Diffusion Model by Proximal Initialization, ICLR 2024, arXiv 2305.18355"
    Params = PIAParams
    params: PIAParams
    normalised: ClassVar[bool] = False

    @property
    def queries_per_sample(self) -> int:
        return 2

    @property
    def max_timestep(self) -> int:
        return self.params.t

    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        from naa_guard.attacks.common import forward_noise, sample_distance

        t = self.params.t
        # Deterministic throughout: no noise is drawn, so ``seed`` and ``sample_keys`` are unused.
        e0 = target.predict_noise(x0, 0, cond)
        if self.normalised:
            mean_abs = e0.abs().flatten(start_dim=1).mean(dim=1).view(-1, *([1] * (e0.dim() - 1)))
            e0 = e0 * math.sqrt(2 / math.pi) / mean_abs
        x_t = forward_noise(x0, target.alphas_cumprod[t], e0)
        return -sample_distance(e0, target.predict_noise(x_t, t, cond), self.params.p)


class PIAN(PIA):
    """PIA with the timestep-0 noise rescaled to a standard normal's mean absolute value."""

    name = "pian"
    normalised = True
