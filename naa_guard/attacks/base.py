"""The attack protocol: a named scorer with validated parameters and a fixed query budget.

An attack turns a batch of clean samples ``x0`` (images scaled to [-1, 1], or their latents for
a latent model) and their condition ``cond`` (the target's own, e.g. text embeddings; None for an
unconditional model) into one score per sample, where a higher score always means "more likely
a training member". Its parameters are a pydantic model, validated when the policy is loaded, so
a bad setting fails before any model is touched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from naa_guard.targets import Target


class AttackParams(BaseModel):
    """Base class of every attack's parameters: unknown keys are rejected, values are frozen and strict
    (``t: yes`` or ``t: "80"`` is an error, not 1 or 80)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Parameters whose value is itself a list (e.g. SimA's ``ts``): in a policy, a plain list is
    # their value and a list of lists lists tuning candidates (naa_guard/tuning.py).
    list_valued: ClassVar[frozenset[str]] = frozenset()


class Attack(ABC):
    """One membership-inference attack, configured by its ``Params``."""

    name: ClassVar[str]
    paper: ClassVar[str]
    Params: ClassVar[type[AttackParams]]

    def __init__(self, params: AttackParams | None = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    @abstractmethod
    def queries_per_sample(self) -> int:
        """Return how many model forward passes one sample costs."""

    @property
    @abstractmethod
    def max_timestep(self) -> int:
        """Return the largest timestep this attack queries (checked against the model's schedule)."""

    @abstractmethod
    def score(self, target: Target, x0: torch.Tensor, sample_keys: torch.Tensor, seed: int, cond: Any = None) -> torch.Tensor:
        """Return one float64 score per sample (higher = member) for a batch of encoded samples.

        ``x0`` and ``cond`` come from ``target.encode``; every model query passes ``cond`` through
        unchanged. ``sample_keys`` holds one int64 per sample that, with ``seed``, fixes that sample's noise,
        so a score never depends on the batch it was computed in.
        """

    def describe(self) -> dict[str, Any]:
        """Return the attack's name and parameters, for reports and cache keys."""
        return {"name": self.name, **self.params.model_dump()}
