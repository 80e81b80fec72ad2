"""End-to-end audits: a leaking model is caught, a null pair is not, and the JSON is complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import OVERFIT, make_tiny_setup, write_policy
from fakes import DictCache

from naa_guard.audit import audit
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy

LEAKY_NAA = "{t: 40, stride: 10, queries: 5, noise: scaled, sigma: 0.1}"


def _overfit_policy(tmp_path: Path, members: str, nonmembers: str, name: str = "overfit") -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"""
        version: 1
        name: {name}
        model: {{path: {OVERFIT / "model"}}}
        data: {{members: {OVERFIT / members}, nonmembers: {OVERFIT / nonmembers}}}
        attacks: {{naa: {LEAKY_NAA}}}
        thresholds: {{auc: 0.6, tpr_at_1pct_fpr: null}}
        runtime: {{device: cpu, batch_size: 128, seed: 0}}
        """,
    )


@pytest.fixture(scope="module")
def leak_result(tmp_path_factory: pytest.TempPathFactory):
    return audit(load_policy(_overfit_policy(tmp_path_factory.mktemp("leak"), "members.npz", "nonmembers.npz")), progress=False)


def test_audit_finds_the_leak_of_an_overfit_model(leak_result) -> None:
    naa = leak_result.attacks["naa"]
    assert (leak_result.n_members, leak_result.n_nonmembers) == (100, 300)
    assert naa.leakage.auc >= 0.8 and naa.leakage.direction == "members_higher"
    assert naa.member_scores.mean() > naa.nonmember_scores.mean()
    (gate,) = leak_result.gates
    assert gate.metric == "auc" and gate.status == "fail" and not leak_result.passed
    assert "exceeds limit 0.600" in gate.message and "100 members / 300 non-members" in gate.message


def test_null_pair_the_model_never_saw_stays_near_chance(tmp_path: Path) -> None:
    result = audit(load_policy(_overfit_policy(tmp_path, "control_a.npz", "control_b.npz", "control")), progress=False)
    assert abs(result.attacks["naa"].leakage.auc - 0.5) <= 0.1
    assert result.passed


def test_json_report_has_the_documented_fields(leak_result) -> None:
    report = leak_result.to_dict()
    assert {"name", "n_members", "n_nonmembers", "attacks", "gates", "passed"} <= set(report)
    naa = report["attacks"]["naa"]
    keys = {"auc", "leak_auc", "direction", "auc_ci", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr", "queries_per_sample", "params", "seconds"}
    assert keys <= set(naa)
    assert naa["queries_per_sample"] == 5 and naa["params"]["noise"] == "scaled"
    assert naa["auc_ci"][0] <= naa["leak_auc"] <= naa["auc_ci"][1]
    assert report["gates"] == [{**report["gates"][0], "attack": "naa", "metric": "auc", "limit": 0.6, "passed": False}]
    assert report["passed"] is False



def test_cached_scores_regate_without_loading_the_model(tiny_setup: Path) -> None:
    policy = load_policy(tiny_setup)
    cache = DictCache()
    first = audit(policy, score_cache=cache, progress=False)
    second = audit(policy, score_cache=cache, progress=False)
    assert first.model_loaded and not second.model_loaded and second.attacks["naa"].cached
    assert np.array_equal(first.attacks["naa"].member_scores, second.attacks["naa"].member_scores)
    changed = audit(policy.model_copy(update={"runtime": policy.runtime.model_copy(update={"seed": 1})}), score_cache=cache, progress=False)
    assert changed.model_loaded  # another seed is another key


def test_limit_subsamples_each_side(tiny_setup: Path) -> None:
    result = audit(load_policy(tiny_setup), limit=20, progress=False)
    assert (result.n_members, result.n_nonmembers, result.limit) == (20, 20, 20)


def test_unresolvable_tpr_gate_is_an_error_not_a_pass(tiny_setup: Path) -> None:
    policy = load_policy(tiny_setup)
    thresholds = policy.thresholds.model_copy(update={"tpr_at_1pct_fpr": 0.99})
    with pytest.raises(PolicyError, match=r"thresholds\.tpr_at_1pct_fpr: .*fewer than 10\. Needed: at least 1000 members and 1000 non-members; present: 24 members / 24 non-members"):
        audit(policy.model_copy(update={"thresholds": thresholds}), progress=False)
    # Decided anyway under unresolvable: warn, and then the gate says it is unresolvable.
    thresholds = thresholds.model_copy(update={"unresolvable": "warn"})
    result = audit(policy.model_copy(update={"thresholds": thresholds}), progress=False)
    gate = next(g for g in result.gates if g.metric == "tpr_at_1pct_fpr")
    assert gate.warning is not None and "cannot be resolved with 24 non-members" in gate.warning and "at least 1000 non-members" in gate.warning


def test_an_audit_reads_each_model_and_sample_file_once_for_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three attacks' cache keys and the baseline fingerprint hash the same files: each file is read once."""
    import naa_guard.samples.digests

    reads: list[Path] = []
    real = naa_guard.samples.digests._feed
    monkeypatch.setattr(naa_guard.samples.digests, "_feed", lambda file, digests: reads.append(file) or real(file, digests))
    policy = load_policy(make_tiny_setup(tmp_path, attacks="{naa: {}, loss: {}, pia: {}}"))
    audit(policy, progress=False, score_cache=DictCache())
    assert reads and len(reads) == len(set(reads)), sorted(str(file) for file in reads)
