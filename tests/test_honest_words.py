"""Honest words in every face: the verdict sentence, PASS on a point estimate, the fixes an unresolvable gate offers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from naa_guard.errors import PolicyError
from naa_guard.policy import parse_policy
from naa_guard.reports.html import to_html
from naa_guard.reports.markdown import to_markdown
from naa_guard.reports.rows import table_header
from naa_guard.reports.text import format_table
from naa_guard.result import AuditResult
from naa_guard.verdict.gates import GateResult, evaluate_gates
from naa_guard.verdict.leakage import evaluate
from naa_guard.verdict.resolvable import check_sample_counts, unresolvable_before_loading
from pytest_plugin.summary import GateRow, GateSummary

BASE = {"version": 1, "model": {"path": "m"}, "data": {"members": "a", "nonmembers": "b"}}
RNG = np.random.default_rng(3)
MEMBERS, NONMEMBERS = RNG.normal(0.3, 1.0, 60), RNG.normal(0.0, 1.0, 60)
LEAKAGE = evaluate(MEMBERS, NONMEMBERS, seed=0)
AUC = LEAKAGE.metrics["auc"]


def _policy(**thresholds: Any):  # type: ignore[no-untyped-def]
    return parse_policy({**BASE, "thresholds": {"tpr_at_1pct_fpr": None, **thresholds}}, Path("honest.naa.yaml"))


def _result(gates: list[GateResult]) -> AuditResult:
    return AuditResult("honest", "honest.naa.yaml", 60, 60, {}, gates, None, "float32", 0, None, False)


def _verdict_line(result: AuditResult) -> str:
    return format_table(result).splitlines()[-1]


def test_an_estimate_within_the_limit_whose_interval_is_not_is_not_certified_not_a_leak() -> None:
    assert AUC.value < 0.62 < AUC.ci[1], (AUC.value, AUC.ci)
    gates = evaluate_gates(_policy(auc=0.62), "loss", LEAKAGE)
    assert [gate.status for gate in gates] == ["fail"]
    result = _result(gates)
    line = _verdict_line(result)
    assert line.startswith("verdict: NOT CERTIFIED: every estimate is within the policy's limits, but the upper 95% CI bound of 1 gate(s) is above its limit"), line
    assert "leaks membership" not in line
    assert "NOT CERTIFIED" in to_markdown(result).splitlines()[0] and 'class="verdict NOT-CERTIFIED"' in to_html(result)
    # pytest's run verdict says it too, from the items' JUnit properties
    summary = GateSummary()
    props = {"naa_guard": "x", "policy": "honest.naa.yaml", "attack": "loss", "metric": "auc", "limit": 0.62, "value": AUC.value, "ci_low": AUC.ci[0], "ci_high": AUC.ci[1], "decision": "upper_ci"}
    summary.rows["a"] = GateRow("honest.naa.yaml::loss::auc", {**props, "within_limit": True}, "FAIL")
    assert summary.run_verdict().startswith("NOT CERTIFIED")
    summary.rows["b"] = GateRow("honest.naa.yaml::naa::auc", {**props, "attack": "naa", "within_limit": False}, "FAIL")
    assert summary.run_verdict() == "FAIL"
    # an estimate beyond its limit is a leak, and the sentence says which gates are which
    both = _result(evaluate_gates(_policy(auc=0.62), "loss", LEAKAGE) + evaluate_gates(_policy(auc=0.52), "naa", LEAKAGE))
    assert _verdict_line(both) == (
        "verdict: FAILED: the model leaks membership beyond the policy's limits (1 gate(s) above their limit); "
        "1 more NOT CERTIFIED (estimate within the limit, interval above it)"
    )


def test_a_pass_on_a_point_estimate_says_so_with_the_intervals_upper_end_in_every_face() -> None:
    gates = evaluate_gates(_policy(auc=0.62, decision="point"), "loss", LEAKAGE)
    assert [gate.status for gate in gates] == ["pass"]
    result = _result(gates)
    note = f"PASS (point estimate; upper 95% CI bound {AUC.ci[1]:.3f}, above the limit: not certified)"
    table = format_table(result)
    assert note in table, table  # the terminal table
    assert _verdict_line(result).startswith("verdict: PASSED on point estimates (decision: point): every estimate is within its limit, but the upper 95% CI bound of 1 gate(s) is above it")
    assert note in to_markdown(result)
    html = to_html(result)
    assert f'<td class="PASS">{note}</td>' in html
    # pytest's summary, from the item's JUnit properties
    properties = {
        "naa_guard": "x", "policy": "honest.naa.yaml", "attack": "loss", "metric": "auc", "limit": 0.62, "value": AUC.value,
        "ci_low": AUC.ci[0], "ci_high": AUC.ci[1], "decision": "point", "confidence": 0.95, "status": "pass",
    }  # fmt: skip
    summary = GateSummary()
    summary.rows["x"] = GateRow("honest.naa.yaml::loss::auc", properties, "PASS")
    assert summary.table_lines()[-1].endswith(note)
    assert summary.run_verdict() == "PASS on point estimates (decision: point); 1 gate(s) not certified: upper CI bound above the limit"
    # under upper_ci a PASS is certified: no note
    certified = _result(evaluate_gates(_policy(auc=0.9), "loss", LEAKAGE))
    assert format_table(certified).splitlines()[2].rstrip().endswith("PASS") and _verdict_line(certified) == "verdict: PASSED"


def test_an_unresolvable_gate_offers_only_the_fixes_that_apply(tmp_path: Path) -> None:
    policy = _policy(auc=0.55)  # data.limit null: no "raise data.limit"
    with pytest.raises(PolicyError) as error:
        check_sample_counts(policy, 40, 40)
    message = str(error.value)
    assert "data.limit" not in message and "--limit" not in message and "tune.fraction" not in message, message
    assert "add images to the sets" in message
    assert "raise thresholds.auc to 0.68 (the smallest limit a model that does not leak is expected to pass at these counts)" in message
    assert "set thresholds.decision: point to gate on the estimate (what it gives up: a PASS no longer certifies at 95% confidence" in message
    limited = parse_policy({**BASE, "data": {**BASE["data"], "limit": 40}, "thresholds": {"tpr_at_1pct_fpr": None, "auc": 0.55}}, Path("honest.naa.yaml"))
    with pytest.raises(PolicyError, match=r"raise data\.limit \(now 40\) if the sets hold more"):
        check_sample_counts(limited, 40, 40, limit=40)
    # too few false positives: neither decision: point nor another limit resolves it
    tpr = _policy(auc=None, tpr_at_1pct_fpr=0.2, decision="point")
    with pytest.raises(PolicyError) as error:
        check_sample_counts(tpr, 400, 400)
    assert "decision: point" not in str(error.value).split("Fix")[1] and "smallest limit" not in str(error.value)


def test_under_unresolvable_warn_an_expectation_is_not_stated_as_a_certainty() -> None:
    warnings = check_sample_counts(_policy(auc=0.55, unresolvable="warn"), 40, 40)
    assert len(warnings) == 1
    assert "no model could be certified" not in warnings[0] and "is expected to fail this gate" in warnings[0], warnings[0]
    assert unresolvable_before_loading(_policy(auc=0.55, unresolvable="warn"), None) == {}


def test_a_confidence_of_999_per_mille_is_written_99_9_percent_never_100() -> None:
    policy = _policy(auc=0.62, confidence=0.999)
    leakage = evaluate(MEMBERS, NONMEMBERS, confidence=0.999, seed=0)
    for decision in ("upper_ci", "point"):
        (gate,) = evaluate_gates(policy.model_copy(update={"thresholds": policy.thresholds.model_copy(update={"decision": decision})}), "loss", leakage)
        assert "99.9% CI" in gate.message and "100%" not in gate.message, gate.message
    result = _result(evaluate_gates(policy, "loss", leakage))
    result.attacks = {"loss": type("Measured", (), {"leakage": leakage})()}  # the table header reads the attacks' confidence
    assert table_header(result)[3] == "99.9% CI"
