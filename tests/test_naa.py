"""NAA: aggregation metrics against direct computations, the DDIM query chain, seeding, batching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from tolerance import assert_scores_close
import torch

from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.attacks.naa import NAA, NAAParams, aggregate
from naa_guard.errors import PolicyError
from naa_guard.policy import parse_policy

DELTA = 1e-12


def _predictions(seed: int = 0, n: int = 4, k: int = 5, d: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, k, d))


def _direct(sample: np.ndarray, metric: str) -> float:
    """Score one sample's (k, D) predictions with plain loops, straight from SPEC section 1."""
    k = len(sample)
    pairs = list(itertools.product(range(k), repeat=2))
    if metric == "l2":
        return -math.log(sum(np.sum((sample[i] - sample[j]) ** 2) for i, j in pairs) / k**2 + DELTA)
    if metric == "l1":
        return -math.log(sum(np.sum(np.abs(sample[i] - sample[j])) for i, j in pairs) / k**2 + DELTA)
    if metric == "centroid":
        centre = sample.mean(axis=0)
        return -math.log(sum(np.linalg.norm(p - centre) for p in sample) / k + DELTA)
    if metric == "density":
        nearest = [min(np.linalg.norm(sample[i] - sample[j]) for j in range(k) if j != i) for i in range(k)]
        return math.log(sum(1 / (d + DELTA) for d in nearest) / k + DELTA)
    if metric == "hull":
        edges = np.stack([p - sample[0] for p in sample[1:]], axis=1)  # (D, k-1)
        volume = math.sqrt(np.linalg.det(edges.T @ edges)) / math.factorial(k - 1)
        return -math.log(volume)
    raise AssertionError(metric)


@pytest.mark.parametrize("metric", ["l2", "l1", "centroid", "density", "hull"])
def test_aggregation_matches_direct_computation(metric: str) -> None:
    predictions = _predictions()
    scores = aggregate(torch.from_numpy(predictions), metric, DELTA).numpy()
    expected = [_direct(sample, metric) for sample in predictions]
    np.testing.assert_allclose(scores, expected, rtol=1e-10)


@pytest.mark.parametrize("metric", ["l2", "l1", "centroid", "density", "hull"])
def test_tighter_predictions_score_higher(metric: str) -> None:
    spread = _predictions(seed=1, n=1)
    tight = spread * 0.1  # the same shape, ten times closer together: a "member"
    scores = aggregate(torch.from_numpy(np.concatenate([tight, spread])), metric, DELTA)
    assert scores[0] > scores[1]


def test_hull_uses_log_volume_where_the_raw_volume_underflows() -> None:
    predictions = _predictions(seed=2, n=2, d=3072) * 1e-30  # volume ~ (1e-30)^4: below float64's range
    scores = aggregate(torch.from_numpy(predictions), "hull", DELTA)
    assert torch.isfinite(scores).all() and (scores > 250).all()


class RecordingTarget:
    """A deterministic stand-in for a model: eps = tanh(x * (1 + t/100)); records every call."""

    def __init__(self, steps: int = 1000) -> None:
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, steps), dim=0).float()
        self.sample_size, self.in_channels, self.device = 4, 1, torch.device("cpu")
        self.calls: list[tuple[int, torch.Tensor]] = []

    def predict_noise(self, x: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        self.calls.append((t, x.clone()))
        return torch.tanh(x * (1 + t / 100))


@pytest.mark.parametrize("noise", ["schedule", "fixed", "scaled"])
def test_query_chain_follows_deterministic_ddim_path(noise: str) -> None:
    target = RecordingTarget()
    attack = NAA(NAAParams(t=60, stride=15, queries=5, noise=noise, sigma=0.3))
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    keys = sample_keys("members", [0, 1, 2])
    scores = attack.score(target, x0, keys, seed=5)

    abar = target.alphas_cumprod.double()
    e = seeded_noise(keys, (1, 4, 4), 5, "naa.inject", torch.device("cpu")).double()
    x = x0.double()
    coefficient = {"schedule": (1 - abar[60]).sqrt(), "fixed": 0.3, "scaled": 0.3 * (1 - abar[60]).sqrt()}[noise]
    x = abar[60].sqrt() * x + coefficient * e
    predictions = []
    for i, tau in enumerate([60, 45, 30, 15, 0]):
        assert target.calls[i][0] == tau
        torch.testing.assert_close(target.calls[i][1].double(), x, rtol=1e-5, atol=1e-5)
        p = torch.tanh(x * (1 + tau / 100))
        predictions.append(p.flatten(1))
        if tau:
            x0_hat = (x - (1 - abar[tau]).sqrt() * p) / abar[tau].sqrt()
            x = abar[tau - 15].sqrt() * x0_hat + (1 - abar[tau - 15]).sqrt() * p
    assert len(target.calls) == 5  # k model calls per batch, no more
    expected = [_direct(sample.numpy(), "l2") for sample in torch.stack(predictions, 1)]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_each_sample_costs_k_model_queries(tiny_setup) -> None:
    from naa_guard.policy import load_policy
    from naa_guard.samples import load_samples
    from naa_guard.scoring.runner import score_samples
    from naa_guard.targets import load_target, read_model_info

    policy = load_policy(tiny_setup)
    target = load_target(read_model_info(policy.model.path), allow_pickle=False, device="cpu", dtype="float32")
    samples = load_samples(policy.data.members, size=8, channels=1)
    attack = NAA(NAAParams(queries=6, t=60))
    score_samples(attack, target, samples, "members", batch_size=10, seed=0)
    assert attack.queries_per_sample == 6
    assert target.sample_queries == 6 * len(samples)
    assert target.forward_calls == 6 * math.ceil(len(samples) / 10)


def test_scores_agree_whatever_the_batch_size(tiny_setup) -> None:
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy

    policy = load_policy(tiny_setup)
    results = [audit(policy, batch_size=size, progress=False).attacks["naa"] for size in (1, 7, 64)]
    for result in results[1:]:
        assert_scores_close(result.member_scores, results[0].member_scores)  # other batch shapes: float32 reordering only
        assert_scores_close(result.nonmember_scores, results[0].nonmember_scores)


def test_noise_is_per_sample_and_seeded() -> None:
    keys = sample_keys("members", [3, 4])
    both = seeded_noise(keys, (2, 2), 0, "s", torch.device("cpu"))
    alone = seeded_noise(keys[1:], (2, 2), 0, "s", torch.device("cpu"))
    assert torch.equal(both[1], alone[0])
    assert not torch.equal(both[0], both[1])
    assert not torch.equal(both, seeded_noise(keys, (2, 2), 1, "s", torch.device("cpu")))
    assert not torch.equal(both, seeded_noise(sample_keys("nonmembers", [3, 4]), (2, 2), 0, "s", torch.device("cpu")))


def test_chain_below_timestep_zero_is_rejected_with_smallest_valid_t(tmp_path) -> None:
    raw = {"version": 1, "model": {"path": "m"}, "data": {"members": "a", "nonmembers": "b"},
           "attacks": {"naa": {"t": 30, "stride": 10, "queries": 5}}}  # fmt: skip
    with pytest.raises(PolicyError) as info:
        parse_policy(raw, tmp_path / "p.naa.yaml")
    message = str(info.value)
    assert "attacks.naa" in message and "smallest valid t is 40" in message and "p.naa.yaml" in message
