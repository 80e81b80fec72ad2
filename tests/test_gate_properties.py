"""Property tests of the gate rule (issue 8): for any policy that passes validation and any scores
(NaN, infinities, ties, tiny sets), a gate is ``pass`` only if its compared metric is finite and
at most its limit, and only on at least 20 members and 20 non-members."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from naa_guard.errors import NaaGuardError, PolicyError
from naa_guard.policy import Policy, parse_policy
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import LeakageReport, MetricValue, evaluate
from naa_guard.verdict.metrics import FPR_LEVELS, min_nonmembers_for

MIN_PER_SIDE = 20  # the rule, written out rather than imported
SOURCE = Path("/nonexistent/property.naa.yaml")  # parse_policy reads no file; paths need not exist
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

limits = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))
thresholds = st.fixed_dictionaries(
    {"auc": st.one_of(st.none(), st.floats(min_value=0.5, max_value=1.0)), "tpr_at_1pct_fpr": limits, "tpr_at_0_1pct_fpr": limits},
    optional={
        "decision": st.sampled_from(["point", "upper_ci"]),
        "confidence": st.floats(min_value=0.51, max_value=0.99),
        "unresolvable": st.sampled_from(["error", "warn"]),
    },
)
# Anything a careless or hostile policy might put where a number belongs.
junk = st.one_of(
    st.booleans(), st.text(max_size=5), st.sampled_from(["0.6", "yes", "1e0", ".nan"]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.none(), st.lists(st.floats(), max_size=2),
)  # fmt: skip


def _policy(raw_thresholds: dict[str, Any]) -> Policy:
    raw = {"version": 1, "name": "p", "model": {"path": "m"}, "data": {"members": "a.npz", "nonmembers": "b.npz"}, "thresholds": raw_thresholds}
    return parse_policy(raw, SOURCE)


def _value_sets(draw_floats: st.SearchStrategy[float]) -> st.SearchStrategy[list[float]]:
    # Small pools force ties; the float pool brings NaN and infinities; sizes include 1 and 0.
    tied = st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5]), min_size=0, max_size=60)
    return st.one_of(tied, st.lists(draw_floats, min_size=0, max_size=60))


scores = _value_sets(st.floats(allow_nan=True, allow_infinity=True, width=64))


def _assert_fail_closed(policy: Policy, gates: list[Any], n_members: int, n_nonmembers: int) -> None:
    for gate in gates:
        if gate.status != "pass":
            continue
        measured = gate.ci[1] if gate.decision == "upper_ci" else gate.value
        assert math.isfinite(measured) and math.isfinite(gate.limit) and measured <= gate.limit, gate
        assert min(n_members, n_nonmembers) >= MIN_PER_SIDE, gate
        if gate.metric in FPR_LEVELS and policy.thresholds.unresolvable == "error":
            assert n_nonmembers >= min_nonmembers_for(FPR_LEVELS[gate.metric]), gate


@SETTINGS
@given(thresholds, scores, scores)
def test_a_gate_passes_only_on_a_finite_metric_within_its_limit(raw: dict[str, Any], members: list[float], nonmembers: list[float]) -> None:
    try:
        policy = _policy(raw)
    except PolicyError:
        assume(False)  # e.g. every limit null: refused, as it should be
    try:
        leakage = evaluate(np.array(members), np.array(nonmembers), confidence=policy.thresholds.confidence, n_bootstrap=50, seed=0)
    except NaaGuardError:
        return  # NaN / inf / empty scores are an error: no verdict at all
    _assert_fail_closed(policy, evaluate_gates(policy, "naa", leakage), leakage.n_members, leakage.n_nonmembers)


metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0.0, max_value=1.0))


@SETTINGS
@given(thresholds, metric_values, metric_values, metric_values, st.integers(0, 3000), st.integers(0, 3000))
def test_no_metric_value_or_count_sneaks_past_a_gate(raw: dict[str, Any], value: float, low: float, high: float, n_members: int, n_nonmembers: int) -> None:
    """Even a LeakageReport no real scores could produce (NaN, inf, CI upside down) never passes wrongly."""
    try:
        policy = _policy(raw)
    except PolicyError:
        assume(False)
    metric = MetricValue(value=value, ci=(low, high), direction="members_higher", resolvable=True)
    metrics = {name: metric for name in ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr")}
    leakage = LeakageReport(value, value, "members_higher", n_members, n_nonmembers, 0.95, metrics)
    gates = evaluate_gates(policy, "naa", leakage)
    for gate in gates:
        if gate.status == "pass":
            measured = gate.ci[1] if gate.decision == "upper_ci" else gate.value
            assert math.isfinite(measured) and measured <= gate.limit and min(n_members, n_nonmembers) >= MIN_PER_SIDE


@SETTINGS
@given(st.sampled_from(["auc", "tpr_at_1pct_fpr", "confidence"]), junk)
def test_a_policy_number_is_a_finite_number_or_an_error(key: str, value: Any) -> None:
    """``auc: yes``, ``auc: "0.6"``, NaN and infinity never validate into a limit."""
    try:
        policy = _policy({key: value} if key != "confidence" else {"auc": 0.6, key: value})
    except PolicyError:
        return
    got = getattr(policy.thresholds, key)
    assert got is None or (type(got) is float and math.isfinite(got)), (value, got)
    assert not isinstance(value, (bool, str)), (value, got)
