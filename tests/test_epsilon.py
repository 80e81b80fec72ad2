"""Tests of naa_guard/epsilon.py (Clopper-Pearson bounds against hand-computed values, the bound's guarantees)
and of its gate in naa_guard/gates.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from naa_guard.policy import parse_policy
from naa_guard.verdict.epsilon import clopper_pearson_upper, epsilon_from_rates, epsilon_lower_bound
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import evaluate
from naa_guard.verdict.metrics import roc


def test_clopper_pearson_upper_matches_hand_computed_values() -> None:
    # No errors in n trials: the bound solves (1 - p)^n = level, so p = 1 - level^(1/n).
    assert clopper_pearson_upper(0, 100, 0.025) == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-12)
    # k errors: the (1 - level) quantile of Beta(k + 1, n - k).
    assert clopper_pearson_upper(7, 200, 0.01) == pytest.approx(beta.ppf(0.99, 8, 193), rel=1e-12)
    # The same bound is the p at which P(Binomial(n, p) <= k) = level.
    upper = float(clopper_pearson_upper(3, 50, 0.05))
    assert sum(math.comb(50, i) * upper**i * (1 - upper) ** (50 - i) for i in range(4)) == pytest.approx(0.05, rel=1e-9)
    assert clopper_pearson_upper(50, 50, 0.05) == 1.0  # every trial erred


@pytest.mark.parametrize("trials", [1, 2, 3, 7, 40, 100, 1000, 1697, 10_000, 200_000])
def test_clopper_pearson_upper_is_scipy_stats_beta_ppf_bit_for_bit(trials: int) -> None:
    """The bound without scipy.stats (betaincinv) equals the documented beta.ppf route exactly, every k and level."""
    errors = np.arange(trials + 1) if trials <= 10_000 else np.unique(np.r_[0, 1, 2, np.random.default_rng(trials).integers(0, trials + 1, 5000), trials])
    # the gate's levels: alpha / 2 at 90 / 95 / 99% confidence, Bonferroni-divided by up to 2 x 200k thresholds
    for confidence in (0.5, 0.9, 0.95, 0.99, 0.999):
        for tests in (1, 2, 3596, 400_002):
            level = (1.0 - confidence) / 2.0 / tests
            k = errors.astype(np.float64)
            full = k >= trials
            want = np.where(full, 1.0, beta.ppf(1.0 - level, k + 1.0, np.where(full, 1.0, trials - k)))
            np.testing.assert_array_equal(clopper_pearson_upper(errors, trials, level), want, err_msg=f"trials {trials}, level {level}")


def test_clopper_pearson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="errors <= trials"):
        clopper_pearson_upper(11, 10, 0.05)
    with pytest.raises(ValueError, match="level in"):
        clopper_pearson_upper(1, 10, 0.0)


def test_epsilon_from_rates_is_the_issue_formula() -> None:
    fpr, fnr, delta = 0.02, 0.3, 1e-5
    expected = max(math.log(1 - delta - fnr) - math.log(fpr), math.log(1 - delta - fpr) - math.log(fnr))
    assert epsilon_from_rates(fpr, fnr, delta) == pytest.approx(expected, rel=1e-12)
    assert epsilon_from_rates(1.0, 1.0, delta) == -np.inf  # no evidence: both log arguments non-positive


def test_one_threshold_hand_computed() -> None:
    """Perfectly separated scores: the best threshold has no errors, so eps_lb comes from two zero-error bounds."""
    members, nonmembers = np.arange(10.0, 60.0), np.arange(0.0, 50.0) - 100.0
    bound = epsilon_lower_bound(members, nonmembers, confidence=0.95, delta=1e-5)
    level = 0.05 / 2 / bound.tests
    zero = 1 - level ** (1 / 50)  # Clopper-Pearson upper bound of 0 errors in 50 at that level
    assert bound.fpr == bound.fnr == 0.0
    assert bound.fpr_upper == pytest.approx(zero, rel=1e-9) and bound.fnr_upper == pytest.approx(zero, rel=1e-9)
    assert bound.value == pytest.approx(math.log(1 - 1e-5 - zero) - math.log(zero), rel=1e-9)
    assert bound.exact == math.inf  # uncorrected, zero errors: unbounded


def test_a_model_that_leaks_nothing_gives_a_bound_near_zero() -> None:
    rng = np.random.default_rng(0)
    bound = epsilon_lower_bound(rng.normal(size=500), rng.normal(size=500))
    assert bound.value < 0.1


def test_a_leaking_model_gives_a_positive_bound_in_its_leak_direction() -> None:
    rng = np.random.default_rng(1)
    higher = epsilon_lower_bound(rng.normal(2.0, 1.0, 400), rng.normal(0.0, 1.0, 400))
    lower = epsilon_lower_bound(-rng.normal(2.0, 1.0, 400), rng.normal(0.0, 1.0, 400))
    assert higher.value > 1.0 and higher.direction == "members_higher"
    assert lower.value > 1.0 and lower.direction == "members_lower"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    st.lists(st.integers(-5, 5), min_size=1, max_size=40),
    st.floats(0.6, 0.99),
)
def test_the_bound_never_exceeds_the_value_from_the_exact_rates(members: list[int], nonmembers: list[int], confidence: float) -> None:
    """At every threshold the corrected bound is at most the formula on the observed rates, so also at the maximum."""
    member, nonmember = np.array(members, float), np.array(nonmembers, float)
    bound = epsilon_lower_bound(member, nonmember, confidence=confidence, delta=1e-5)
    assert 0.0 <= bound.value <= bound.exact
    for sign in (1.0, -1.0):
        fpr, tpr, _ = roc(sign * member, sign * nonmember)
        false_pos, false_neg = np.rint(fpr * len(nonmember)), np.rint((1 - tpr) * len(member))
        level = (1 - confidence) / 2 / bound.tests
        corrected = epsilon_from_rates(clopper_pearson_upper(false_pos, len(nonmember), level), clopper_pearson_upper(false_neg, len(member), level), 1e-5)
        observed = epsilon_from_rates(fpr, 1 - tpr, 1e-5)
        assert np.all(corrected <= observed + 1e-12)
        assert np.max(corrected) <= bound.value + 1e-12


def test_json_form_states_the_caveat_and_has_no_infinity() -> None:
    bound = epsilon_lower_bound(np.arange(30.0), np.arange(30.0) - 100.0)
    data = bound.to_dict()
    assert data["epsilon_from_observed_rates"] is None  # unbounded: JSON has no infinity
    assert "not a formal differential-privacy audit" in data["note"]


def _policy(epsilon_lb: float) -> Any:
    raw = {
        "version": 1, "model": {"path": "m"}, "data": {"members": "a.npz", "nonmembers": "b.npz"},
        "thresholds": {"auc": None, "tpr_at_1pct_fpr": None, "epsilon_lb": epsilon_lb},
    }  # fmt: skip
    return parse_policy(raw, Path("/tmp/gates.naa.yaml"))


def test_epsilon_gate_fails_above_its_limit_and_passes_below() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(3.0, 1.0, 300), rng.normal(0.0, 1.0, 300)
    leakage, bound = evaluate(members, nonmembers, n_bootstrap=10), epsilon_lower_bound(members, nonmembers)
    [failing] = evaluate_gates(_policy(1.0), "naa", leakage, bound)
    assert failing.metric == "epsilon_lb" and failing.status == "fail" and failing.value == bound.value > 1.0
    assert f"naa epsilon lower bound {bound.value:.3f}" in failing.message and "exceeds limit 1.000" in failing.message
    assert "not a formal DP audit" in failing.message
    [passing] = evaluate_gates(_policy(bound.value + 1.0), "naa", leakage, bound)
    assert passing.status == "pass"


def test_epsilon_gate_without_a_bound_is_an_error_never_a_pass() -> None:
    rng = np.random.default_rng(1)
    leakage = evaluate(rng.normal(size=50), rng.normal(size=50), n_bootstrap=10)
    [gate] = evaluate_gates(_policy(100.0), "naa", leakage, None)
    assert gate.status == "error" and "cannot be decided" in gate.message
