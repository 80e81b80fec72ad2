"""Degenerate scores (naa_guard/verdict/degenerate.py): tied, constant or precision-collapsed scores are
no evidence, so their gates are errors, never an AUC 0.500 PASS; healthy scores still pass."""

from __future__ import annotations

import numpy as np
import pytest

from naa_guard.errors import NonFiniteScoreError
from naa_guard.policy import Policy
from naa_guard.verdict.degenerate import MIN_EFFECTIVE_DISTINCT, at_resolution, cross_tie_fraction, degenerate_scores, null_auc_se, tie_probability
from naa_guard.verdict.epsilon import epsilon_lower_bound
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import evaluate

RNG = np.random.default_rng(0)
HEALTHY = (RNG.normal(size=200), RNG.normal(size=200))


def _policy() -> Policy:
    return Policy.model_validate({
        "version": 1, "name": "t", "model": {"path": "m"}, "data": {"members": "a", "nonmembers": "b"}, "attacks": {"loss": {}},
        "thresholds": {"auc": 0.7, "tpr_at_1pct_fpr": None, "epsilon_lb": 5.0},
    })  # fmt: skip


def test_a_healthy_continuous_pair_is_not_degenerate_and_gates_as_usual() -> None:
    assert degenerate_scores(*HEALTHY) is None
    assert degenerate_scores(HEALTHY[0][:20], HEALTHY[1][:20]) is None  # the smallest counts a gate accepts
    assert degenerate_scores(HEALTHY[0].astype(np.float32), HEALTHY[1].astype(np.float32)) is None
    leakage = evaluate(*HEALTHY, n_bootstrap=50)
    assert leakage.degenerate is None
    bound = epsilon_lower_bound(*HEALTHY)
    assert {gate.status for gate in evaluate_gates(_policy(), "loss", leakage, bound)} == {"pass"}


def test_a_few_ties_are_not_degenerate() -> None:
    members = np.round(HEALTHY[0], 2)  # 200 values on a 0.01 grid: some ties, still many distinct values
    assert degenerate_scores(members, np.round(HEALTHY[1], 2)) is None


@pytest.mark.parametrize("side", ["members", "nonmembers"])
def test_a_constant_side_is_degenerate_whatever_the_other(side: str) -> None:
    constant = np.full(200, -3.5)
    pair = (constant, HEALTHY[1]) if side == "members" else (HEALTHY[0], constant)
    found = degenerate_scores(*pair)
    assert found is not None and found.side == side
    assert "1 distinct value" in found.reason and "-3.5" in found.reason


def test_an_almost_all_tied_side_is_degenerate() -> None:
    members = np.concatenate([np.zeros(185), HEALTHY[0][:15]])  # 15 distinct values beside one shared by 185
    found = degenerate_scores(members, HEALTHY[1])
    assert found is not None and found.side == "members" and "185 of them the same value" in found.reason


def test_all_scores_alike_gate_as_errors_not_a_pass() -> None:
    leakage = evaluate(np.zeros(200), np.zeros(200), n_bootstrap=50)
    assert leakage.metrics["auc"].value == 0.5 and leakage.metrics["auc"].ci[1] <= 0.7  # what used to PASS
    assert leakage.degenerate is not None and leakage.to_dict()["degenerate"] == leakage.degenerate
    gates = evaluate_gates(_policy(), "sima", leakage, epsilon_lower_bound(np.zeros(200), np.zeros(200)))
    assert [gate.metric for gate in gates] == ["auc", "epsilon_lb"]
    assert all(gate.status == "error" and "sima" in gate.message and "degenerate" in gate.message for gate in gates)


def test_values_that_differ_below_float32_resolution_are_one_value() -> None:
    noise = RNG.normal(size=200)
    members, nonmembers = 1.0 + 1e-9 * noise, 1.0 + 1e-9 * RNG.normal(size=200) + 5e-10  # distinct in float64 only
    assert np.unique(members).size == 200
    found = degenerate_scores(members, nonmembers)
    assert found is not None and "distinct value" in found.reason
    # the same scores far above float32's resolution are healthy
    assert degenerate_scores(1.0 + 1e-3 * noise, 1.0 + 1e-3 * RNG.normal(size=200)) is None


def test_scores_collapsed_by_half_precision_are_degenerate() -> None:
    # a half-precision run: a spread of 1e-4 around 0.1 is a few float16 steps, so the values tie exactly
    members = (0.1 + 1e-4 * RNG.normal(size=200)).astype(np.float16).astype(np.float64)
    nonmembers = (0.1 + 1e-4 * RNG.normal(size=200)).astype(np.float16).astype(np.float64)
    assert np.unique(members).size < MIN_EFFECTIVE_DISTINCT * 2
    assert degenerate_scores(members, nonmembers) is not None


def test_many_cross_ties_at_large_counts_are_degenerate() -> None:
    # 40 values shared evenly by 4000 samples per side: each side has 40 effective distinct values
    # (condition 1 holds), but 2.5% of the pairs tie, more than the AUC's standard error allows
    members, nonmembers = RNG.integers(0, 40, size=4000) / 7.0, RNG.integers(0, 40, size=4000) / 7.0
    assert 1.0 / tie_probability(members) > MIN_EFFECTIVE_DISTINCT
    assert cross_tie_fraction(members, nonmembers) > null_auc_se(4000, 4000)
    found = degenerate_scores(members, nonmembers)
    assert found is not None and found.side == "both"


def test_a_calibrated_difference_below_its_operands_resolution_is_zero() -> None:
    target = 0.25 + 0.01 * RNG.normal(size=200)
    rounding = target * 1e-8 * RNG.normal(size=200)  # a reference that is the model, up to float rounding
    difference = rounding
    assert degenerate_scores(difference, -difference) is None  # on their own, the tiny differences look continuous
    found = degenerate_scores(difference, -difference, magnitudes=(target, target))
    assert found is not None
    # a real calibrated signal, far above the operands' resolution, stays healthy
    assert degenerate_scores(0.01 * RNG.normal(size=200), 0.01 * RNG.normal(size=200), magnitudes=(target, target)) is None
    assert np.all(at_resolution(rounding, target) == 0.0)


def test_cross_tie_fraction_counts_equal_pairs() -> None:
    assert cross_tie_fraction(np.array([1.0, 2.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(2 / 6)
    assert cross_tie_fraction(np.array([1.0]), np.array([5.0])) == 0.0


def test_non_finite_scores_stay_an_error() -> None:
    with pytest.raises(NonFiniteScoreError):
        evaluate(np.array([np.nan] * 30), np.zeros(30))
    with pytest.raises(NonFiniteScoreError):
        evaluate(np.full(30, np.inf), np.full(30, np.inf))
