"""SimA: the model's noise prediction at the clean input (Rao, Qu & Moyer, TMLR, arXiv 2509.25003).

Ask the model for the noise of the *clean* image at timestep ``t``, ``eps_theta(x0, t, cond)``
(the VAE latent and the image's conditioning for a latent model). A denoiser points toward a
kernel-weighted mean of the training points near its input, so at a training member it has almost
nothing to remove and its output is small. One query per timestep, no noise drawn: each score is
a deterministic function of its own sample. Specification: SPEC section 2.

Score at one ``t``: ``-sum |eps_theta(x0, t)|^p`` over the elements (float64), so a small
prediction, i.e. "member", scores higher.

Several timesteps (``ts: [20, 50, 100]``, one query each): ``-mean_t log(mean |eps_theta(x0, t)|^p)``.
The size of the prediction differs by orders of magnitude between timesteps, so a plain sum over
``t`` would be the largest ``t``'s score alone. The log of the per-element mean turns a timestep's
overall scale into an additive constant that is the same for every sample (so it changes no
ranking) and weighs every timestep's relative differences between samples equally: a
standardisation per ``t`` that uses no other sample, so a score still depends only on its own
image. With one listed ``t`` it ranks samples exactly as ``t`` alone does (a monotone transform).
To pick the single best ``t`` instead, list candidates (``t: [20, 50, 100]``): tuning chooses one
on the calibration split (SPEC section 6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, model_validator

from naa_guard.attacks.base import Attack, AttackParams

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target

Timestep = Annotated[int, Field(ge=0, le=10_000)]


class SimAParams(AttackParams):
    """SimA's parameters: one timestep ``t`` (default 50) or several ``ts``; defaults as in SPEC section 2."""

    # ``ts`` takes a list as its value: in a policy, a list of lists lists tuning candidates.
    list_valued: ClassVar[frozenset[str]] = frozenset({"ts"})

    t: int | None = Field(50, ge=0, le=10_000, description="timestep of the one query; leave it out when ts is given")
    p: float = Field(4.0, ge=1, le=16, allow_inf_nan=False, description="exponent: the score is -sum |eps_theta(x0, t)|^p; at least 1 (a smaller p flattens every |x|^p toward 1)")
    ts: tuple[Timestep, ...] | None = Field(
        None, min_length=1, max_length=16, strict=False,
        description="several timesteps, one query each; score -mean_t log(mean |eps_theta(x0, t)|^p); replaces t",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _ts_replaces_t(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("ts") is not None:
            if data.get("t") is not None:
                raise ValueError(
                    f"t={data['t']!r} and ts={data['ts']!r} are both given: give t (one timestep) or ts (several "
                    "timesteps, their scores averaged), not both. To choose the best single t on the calibration "
                    "split instead, list t's candidates: t: [20, 50, 100]"
                )
            return {**data, "t": None}
        return data

    @model_validator(mode="after")
    def _one_way_to_choose_t(self) -> SimAParams:
        if self.ts is None and self.t is None:
            raise ValueError("t is null and no ts is given: give t (e.g. t: 50) or ts (e.g. ts: [20, 50, 100])")
        if self.ts is not None and len(set(self.ts)) < len(self.ts):
            raise ValueError(f"ts={list(self.ts)} repeats a timestep; list each timestep once")
        return self

    @property
    def timesteps(self) -> tuple[int, ...]:
        """Return the timesteps queried, one query each."""
        return self.ts if self.ts is not None else (int(self.t),)  # type: ignore[arg-type]  # t is set when ts is not


class SimA(Attack):
    """SimA: a small noise prediction at the clean input = member."""

    name = "sima"
    paper = "Rao, Qu & Moyer, Score-based Membership Inference on Diffusion Models, TMLR, arXiv 2509.25003"
    Params = SimAParams
    params: SimAParams

    @property
    def queries_per_sample(self) -> int:
        return len(self.params.timesteps)

    @property
    def max_timestep(self) -> int:
        return max(self.params.timesteps)

    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        import torch

        from naa_guard.attacks.common import predict_at_clean_input

        # Deterministic throughout: no noise is drawn, so ``seed`` and ``sample_keys`` are unused.
        sums = []  # sum |eps|^p per sample, one row per timestep
        for t in self.params.timesteps:
            prediction = predict_at_clean_input(target, x0, t, cond).to("cpu", torch.float64).flatten(start_dim=1)
            sums.append(prediction.abs().pow(self.params.p).sum(dim=1))
        if self.params.ts is None:
            return -sums[0]
        return -(torch.stack(sums) / prediction.shape[1]).log().mean(dim=0)
