"""Fake targets for attack and audit tests: models whose membership signal is known by construction."""

from __future__ import annotations

import numpy as np
import torch

from naa_guard.attacks import Attack
from naa_guard.attacks.common import ROLE_CODES, ROLE_STRIDE


def is_member(key: int) -> bool:
    """Return whether a sample key belongs to the members' set (keys encode the role: naa_guard.attacks.keys)."""
    return key // ROLE_STRIDE == ROLE_CODES["members"]


class NoQueryAttack(Attack):
    """Base of fake attacks that score from the sample keys alone: one query counted, timestep 0, the model never asked."""

    paper = "none"

    @property
    def queries_per_sample(self) -> int:
        return 1

    @property
    def max_timestep(self) -> int:
        return 0


class KnownImagesTarget:
    """A fake model that knows every clean image: exact noise predictions for one set, perturbed for the other.

    Given a noisy ``x`` at timestep ``t`` it finds the clean image ``x0`` that ``x`` is closest to
    (nearest ``sqrt(abar[t]) x0``) and returns the noise that takes ``x0`` to ``x`` exactly. For
    the ``perturbed`` images it adds seeded Gaussian noise to that prediction. The ``exact`` images
    therefore behave like perfectly memorised training members, and every attack must score them
    higher.
    """

    def __init__(self, exact: torch.Tensor, perturbed: torch.Tensor, *, perturbation: float = 0.3) -> None:
        from diffusers import DDPMScheduler

        self.alphas_cumprod = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.float()
        self.images = torch.cat([torch.as_tensor(exact), torch.as_tensor(perturbed)]).float()
        self.is_exact = torch.arange(len(self.images)) < len(exact)
        self.perturbation = perturbation
        self.sample_size = int(self.images.shape[-1])
        self.in_channels = int(self.images.shape[1])
        self.device = torch.device("cpu")
        self.sample_queries = 0

    def predict_noise(self, x: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        """Return the exact noise of ``x``'s nearest clean image, perturbed for the perturbed set."""
        abar = self.alphas_cumprod[t]
        nearest = torch.cdist(x.flatten(start_dim=1), (abar.sqrt() * self.images).flatten(start_dim=1)).argmin(dim=1)
        exact_noise = (x - abar.sqrt() * self.images[nearest]) / (1 - abar).sqrt()
        wrong = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(t))) * self.perturbation
        self.sample_queries += x.shape[0]
        return torch.where(self.is_exact[nearest].view(-1, 1, 1, 1), exact_noise, exact_noise + wrong)


class DictCache:
    """An in-memory score cache (the ScoreCache protocol)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, np.ndarray]] = {}

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        return self.entries.get(key)

    def put(self, key: str, scores: dict[str, np.ndarray]) -> None:
        self.entries[key] = scores
