"""Audits with several attacks: every gate on every attack, the worst-case view, reversed signals, the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_setup
from fakes import DictCache, KnownImagesTarget

from naa_guard.audit import AttackResult, AuditResult, audit
from naa_guard.policy import load_policy, parse_policy
from naa_guard.reports.markdown import to_markdown
from naa_guard.reports.text import format_table
from naa_guard.samples import load_samples
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import evaluate


@pytest.fixture(scope="module")
def two_attacks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a policy running loss and pia over a tiny model and 2 x 24 random images."""
    return make_tiny_setup(
        tmp_path_factory.mktemp("two_attacks"), attacks="{loss: {t: 100}, pia: {t: 100}}",
        thresholds="{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}", batch_size=16, name="two-attacks",
    )


def _images(policy_path: Path, role: str) -> np.ndarray:
    policy = load_policy(policy_path)
    return load_samples(getattr(policy.data, role), size=8, channels=1, seed=0 if role == "members" else 1, role=role).images


def test_reversed_signal_still_fails_the_gates(two_attacks: Path) -> None:
    # The fake model predicts the NON-members' noise exactly: members score lower under every attack.
    target = KnownImagesTarget(exact=_images(two_attacks, "nonmembers"), perturbed=_images(two_attacks, "members"))
    result = audit(load_policy(two_attacks), target=target, progress=False)

    assert {(gate.attack, gate.metric) for gate in result.gates} == {("loss", "auc"), ("pia", "auc")}
    for gate in result.gates:
        assert result.attacks[gate.attack].leakage.auc < 0.1  # raw AUC: members clearly lower
        assert (gate.status, gate.direction) == ("fail", "members_lower")
        assert gate.value > 0.9 and "reversed signal" in gate.message
    assert not result.passed
    assert result.worst_case()["auc"]["direction"] == "members_lower"


def test_reversed_synthetic_scores_fail_through_evaluate_gates() -> None:
    rng = np.random.default_rng(0)
    leakage = evaluate(rng.normal(-3.0, 1.0, 300), rng.normal(0.0, 1.0, 1000))
    policy = parse_policy(
        {"version": 1, "model": {"path": "m"}, "data": {"members": "a", "nonmembers": "b"}, "thresholds": {"auc": 0.6, "tpr_at_1pct_fpr": 0.05}},
        Path("synthetic.naa.yaml"),
    )
    gates = evaluate_gates(policy, "reversed", leakage)
    assert leakage.auc < 0.05
    assert [(gate.metric, gate.status, gate.direction) for gate in gates] == [
        ("auc", "fail", "members_lower"),
        ("tpr_at_1pct_fpr", "fail", "members_lower"),
    ]


def _synthetic_result(**scores: tuple[np.ndarray, np.ndarray]) -> AuditResult:
    attacks = {
        name: AttackResult(name, {}, 1, 0.0, members, nonmembers, evaluate(members, nonmembers, n_bootstrap=200))
        for name, (members, nonmembers) in scores.items()
    }
    return AuditResult("synthetic", None, 300, 2000, attacks, [], None, "float32", 0, None, False)


def test_worst_case_names_the_leakiest_attack_per_metric() -> None:
    rng = np.random.default_rng(1)
    nonmembers = rng.normal(0.0, 1.0, 2000)
    shifted = rng.normal(1.0, 1.0, 300)  # AUC ~0.76, few members in the far tail
    tail = np.concatenate([rng.normal(0.0, 1.0, 240), np.full(60, 10.0)])  # AUC ~0.6, 20% far out
    result = _synthetic_result(shifted=(shifted, nonmembers), tail=(tail, nonmembers))
    worst = result.worst_case()
    assert worst["auc"]["attack"] == "shifted"
    assert worst["tpr_at_1pct_fpr"]["attack"] == "tail"
    assert worst["auc"]["value"] == result.attacks["shifted"].leakage.leak_auc
    assert json.loads(json.dumps(result.to_dict()))["worst_case"]["tpr_at_1pct_fpr"]["attack"] == "tail"

    reversed_ = _synthetic_result(shifted=(shifted, nonmembers), lower=(rng.normal(-2.0, 1.0, 300), nonmembers)).worst_case()
    assert (reversed_["auc"]["attack"], reversed_["auc"]["direction"]) == ("lower", "members_lower")


def test_reports_show_the_worst_case(two_attacks: Path) -> None:
    target = KnownImagesTarget(exact=_images(two_attacks, "members"), perturbed=_images(two_attacks, "nonmembers"))
    result = audit(load_policy(two_attacks), target=target, progress=False)
    worst = result.worst_case()["auc"]["attack"]
    table = format_table(result)
    assert "worst case over attacks" in table
    assert any(line.split()[:3] == ["leak", "AUC", worst] for line in table.splitlines())
    markdown = to_markdown(result)
    assert "**Worst case**" in markdown and f"| leak AUC | {worst} |" in markdown


def test_cached_scores_skip_loading_the_model(two_attacks: Path) -> None:
    cache = DictCache()
    first = audit(load_policy(two_attacks), progress=False, score_cache=cache)
    second = audit(load_policy(two_attacks), progress=False, score_cache=cache)
    assert first.model_loaded and not second.model_loaded
    assert len(cache.entries) == 2 and all(result.cached for result in second.attacks.values())
    for name in ("loss", "pia"):
        np.testing.assert_array_equal(second.attacks[name].member_scores, first.attacks[name].member_scores)
