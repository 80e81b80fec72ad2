"""Tests of naa_guard/gates.py for the epsilon gate: pass, fail, and an error when the bound is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from naa_guard.epsilon import epsilon_lower_bound
from naa_guard.gates import evaluate_gates
from naa_guard.metrics import evaluate
from naa_guard.policy import parse_policy


def _policy(epsilon_lb: float) -> object:
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
