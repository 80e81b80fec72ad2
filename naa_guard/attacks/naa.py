"""NAA: Noise Aggregation Analysis (arXiv 2510.21783), the primary attack.

Inject small noise into an image, follow the deterministic DDIM path downwards for ``queries``
timesteps ``t, t - stride, ...``, and measure how tightly the model's ``queries`` noise
predictions cluster: a model that memorised an image predicts nearly the same noise at adjacent
timesteps. Queries per sample: ``queries``. Specification: SPEC section 1.

Scores: ``-log(C + delta)`` of the aggregation ``C`` (density: ``+log``; hull: minus the log
volume), computed in float64, so a higher score means tighter clustering, i.e. "member".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from naa_guard.attacks.base import Attack, AttackParams

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target

NoiseMode = Literal["schedule", "fixed", "scaled"]
AggregationMetric = Literal["l2", "l1", "centroid", "density", "hull"]


class NAAParams(AttackParams):
    """NAA's parameters; defaults as in SPEC section 1."""

    t: int = Field(80, ge=0, le=10_000, description="target (first) timestep of the query chain")
    stride: int = Field(10, ge=1, description="timestep gap between adjacent queries")
    queries: int = Field(5, ge=2, le=64, description="k: noise predictions per sample")
    noise: NoiseMode = Field("schedule", description="how the injected noise is scaled")
    sigma: float = Field(0.1, gt=0, le=10, description="noise level of the fixed and scaled modes")
    metric: AggregationMetric = Field("l2", description="how the k predictions are aggregated")
    delta: float = Field(1e-12, gt=0, le=1e-3, description="stabiliser inside the log")

    @model_validator(mode="after")
    def _chain_stays_non_negative(self) -> NAAParams:
        span = (self.queries - 1) * self.stride
        if self.t < span:
            raise ValueError(
                f"t={self.t} is too small for queries={self.queries} and stride={self.stride}: "
                f"the chain t - i*stride (i < queries) would go below timestep 0. The smallest "
                f"valid t is {span}; raise t, or lower queries or stride"
            )
        return self


def aggregate(predictions: torch.Tensor, metric: AggregationMetric, delta: float) -> torch.Tensor:
    """Return the score of each sample from its ``(N, k, D)`` float64 noise predictions."""
    import torch

    k = predictions.shape[1]
    if metric == "l2":
        dist = torch.cdist(predictions, predictions, compute_mode="donot_use_mm_for_euclid_dist")
        return -torch.log((dist**2).sum(dim=(1, 2)) / k**2 + delta)
    if metric == "l1":
        dist = torch.cdist(predictions, predictions, p=1)
        return -torch.log(dist.sum(dim=(1, 2)) / k**2 + delta)
    if metric == "centroid":
        spread = (predictions - predictions.mean(dim=1, keepdim=True)).norm(dim=2)
        return -torch.log(spread.mean(dim=1) + delta)
    if metric == "density":
        dist = torch.cdist(predictions, predictions, compute_mode="donot_use_mm_for_euclid_dist")
        dist = dist + torch.diag(torch.full((k,), math.inf, dtype=dist.dtype, device=dist.device))
        nearest = dist.min(dim=2).values
        return torch.log((1.0 / (nearest + delta)).mean(dim=1) + delta)
    if metric == "hull":
        edges = (predictions[:, 1:] - predictions[:, :1]).transpose(1, 2)  # (N, D, k-1)
        gram = edges.transpose(1, 2) @ edges
        sign, logdet = torch.linalg.slogdet(gram)
        log_volume = 0.5 * logdet - math.lgamma(k)
        # A degenerate simplex (sign <= 0: collinear predictions) has volume 0, the tightest
        # cluster there is, so it ranks as the most member-like: above every finite score. Each of
        # the k-1 pivots of a non-singular float64 Gram matrix is at least the smallest subnormal
        # (log >= -744.5), which bounds -log_volume for any non-degenerate simplex.
        ceiling = 0.5 * (k - 1) * 744.5 + math.lgamma(k) + 1.0
        return torch.where(sign > 0, -log_volume, torch.full_like(log_volume, ceiling))
    raise ValueError(f"unknown aggregation metric {metric!r}")


class NAA(Attack):
    """Noise Aggregation Analysis: tight clustering of k DDIM-chained predictions = member."""

    name = "naa"
    paper = "Noise Aggregation Analysis, arXiv 2510.21783"
    Params = NAAParams
    params: NAAParams

    @property
    def queries_per_sample(self) -> int:
        return self.params.queries

    @property
    def max_timestep(self) -> int:
        return self.params.t

    def timesteps(self) -> list[int]:
        """Return the query timesteps ``t - i*stride``, i = 0..k-1."""
        return [self.params.t - i * self.params.stride for i in range(self.params.queries)]

    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        import torch

        from naa_guard.attacks.common import ddim_step, seeded_noise

        p = self.params
        abar = target.alphas_cumprod
        noise = seeded_noise(sample_keys, tuple(x0.shape[1:]), seed, "naa.inject", x0.device)
        a_t = abar[p.t]
        if p.noise == "schedule":
            x = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
        elif p.noise == "fixed":
            x = a_t.sqrt() * x0 + p.sigma * noise
        else:
            x = a_t.sqrt() * x0 + p.sigma * (1 - a_t).sqrt() * noise

        timesteps = self.timesteps()
        predictions = []
        for i, tau in enumerate(timesteps):
            eps = target.predict_noise(x, tau, cond)
            predictions.append(eps.flatten(start_dim=1))
            if i + 1 < len(timesteps):
                x = ddim_step(x, eps, abar[tau], abar[timesteps[i + 1]])
        # One host copy per batch, not one per query (each copy would also wait for the device).
        return aggregate(torch.stack(predictions, dim=1).to("cpu", torch.float64), p.metric, p.delta)
