"""Tests of the regression gate (naa_guard/baseline.py) and the fingerprints it compares (naa_guard/fingerprint.py).

"Now" is the committed overfit digits fixture on a 40-per-side subsample (NAA AUC ~0.97): the
absolute limit is set to 0.999 (above any AUC these sets give) so that only the regression can fail the gate.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import OVERFIT, write_policy
from fakes import DictCache

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import BaselineError, PolicyError
from naa_guard.policy import load_policy
from naa_guard.verdict.baseline import fingerprint_differences
from naa_guard.verdict.leakage import evaluate
from naa_guard.verdict.metrics import auc


def overfit_policy(folder: Path, *, limit: int = 40, extra: str = "") -> Path:
    """Write a policy over the overfit fixture whose absolute AUC limit always passes."""
    return write_policy(
        folder / "overfit.naa.yaml",
        f"""
        version: 1
        model: {{path: {OVERFIT / "model"}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}, limit: {limit}}}
        attacks: {{naa: {{t: 40, stride: 10, noise: scaled, sigma: 0.1}}}}
        thresholds: {{auc: 0.999, tpr_at_1pct_fpr: null, max_increase: 0.02}}
        runtime: {{device: cpu, batch_size: 128}}
        """ + extra,
    )


@pytest.fixture(scope="module")
def cache() -> DictCache:
    """Share scores between this module's audits of the same samples."""
    return DictCache()


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory, cache: DictCache) -> tuple[Path, dict[str, Any]]:
    """Return a policy (no baseline in it) and the report.json of its audit."""
    folder = tmp_path_factory.mktemp("now")
    policy = overfit_policy(folder)
    no_regression = load_policy(policy).model_copy(update={"thresholds": load_policy(policy).thresholds.model_copy(update={"max_increase": None})})
    result = audit(no_regression, progress=False, score_cache=cache)
    return policy, json.loads(json.dumps(result.to_dict()))


def lower_baseline(report: dict[str, Any], folder: Path) -> tuple[Path, float]:
    """Write a baseline of the same samples whose NAA scores leak less (figures recomputed from them); return it and its leak AUC."""
    baseline = copy.deepcopy(report)
    attack = baseline["attacks"]["naa"]
    members, nonmembers = (np.array(attack["scores"][role]["score"]) for role in ("members", "nonmembers"))
    spread = float(np.std(np.concatenate([members, nonmembers])))
    shift = next(d for d in np.linspace(0.0, 5.0, 201) if auc(members - d * spread, nonmembers) <= 0.80)
    members = members - shift * spread  # the same samples, a weaker member signal
    stored = attack["metrics"]
    leakage = evaluate(members, nonmembers, confidence=stored["confidence"], n_bootstrap=stored["n_bootstrap"], seed=stored["seed"])
    attack["scores"]["members"]["score"] = members.tolist()
    attack["metrics"] = leakage.to_dict()
    path = folder / "baseline.json"
    path.write_text(json.dumps(baseline), encoding="utf-8")
    return path, leakage.leak_auc


def test_a_baseline_with_a_lower_auc_fails_the_gate_with_both_values(measured: tuple[Path, dict[str, Any]], tmp_path: Path, cache: DictCache) -> None:
    policy, report = measured
    baseline, then = lower_baseline(report, tmp_path)
    result = audit(load_policy(policy), progress=False, score_cache=cache, baseline=baseline)
    gate = result.gates[0]
    now = report["attacks"]["naa"]["metrics"]["metrics"]["auc"]["value"]
    assert gate.status == "fail" and gate.value <= gate.limit  # within its absolute limit: the regression failed it
    assert f"rose from {then:.3f} (baseline" in gate.message and f"to {now:.3f} (now" in gate.message
    assert "thresholds.max_increase 0.020" in gate.message and str(baseline) in gate.message
    assert gate.baseline is not None and gate.baseline["regressed"] and gate.baseline["change"] == pytest.approx(now - then)
    assert "on the same samples" in gate.message and "upper end of the change's interval" in gate.message


def test_the_same_baseline_passes(measured: tuple[Path, dict[str, Any]], tmp_path: Path, cache: DictCache) -> None:
    policy, report = measured
    (tmp_path / "same.json").write_text(json.dumps(report), encoding="utf-8")
    result = audit(load_policy(policy), progress=False, score_cache=cache, baseline=tmp_path / "same.json")
    assert result.passed and result.gates[0].baseline["change"] == 0.0 and not result.gates[0].baseline["regressed"]


def test_a_baseline_of_another_sample_set_is_an_error_saying_what_differs(measured: tuple[Path, dict[str, Any]], tmp_path: Path, cache: DictCache) -> None:
    policy, report = measured
    (tmp_path / "other.json").write_text(json.dumps(report), encoding="utf-8")
    other = overfit_policy(tmp_path, limit=30, extra="baseline: ./other.json\n")
    with pytest.raises(BaselineError) as caught:
        audit(load_policy(other), progress=False, score_cache=cache)
    message = str(caught.value)
    assert "member sample set differs" in message and "count: 40 (baseline) vs 30 (now)" in message
    assert "non-member sample set differs" in message and "model layout differs" not in message and "attack settings differs" not in message


def test_fingerprint_differences_name_layout_and_attack_settings(measured: tuple[Path, dict[str, Any]]) -> None:
    then = measured[1]["fingerprint"]
    now = copy.deepcopy(then)
    assert fingerprint_differences(then, now) == []
    now["model_layout"] = {"digest": "0" * 64, "summary": "UNet2DModel 3x32x32"}
    now["attack_settings"]["attacks"]["naa"]["t"] = 80
    now["attack_settings"]["digest"] = "1" * 64
    lines = fingerprint_differences(then, now)
    assert lines[0].startswith("model layout differs (summary: 'UNet2DModel 1x8x8") and "'UNet2DModel 3x32x32' (now)" in lines[0]
    assert lines[1].startswith("attack settings differs (attacks: ") and "'t': 40" in lines[1] and "'t': 80" in lines[1]


def test_max_increase_without_a_baseline_is_an_error_before_any_scoring(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="thresholds.max_increase is set but no baseline"):
        audit(load_policy(overfit_policy(tmp_path)), progress=False)


@pytest.mark.parametrize("content", ["not json", json.dumps({"name": "old report"})])
def test_an_unusable_baseline_is_an_error(content: str, measured: tuple[Path, dict[str, Any]], tmp_path: Path, cache: DictCache) -> None:
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    with pytest.raises(BaselineError, match="bad.json"):
        audit(load_policy(measured[0]), progress=False, score_cache=cache, baseline=tmp_path / "bad.json")


def test_cli_baseline_option_shows_baseline_now_and_change(measured: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, report = measured
    baseline, then = lower_baseline(report, tmp_path)
    assert main(["audit", str(policy), "--quiet", "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert f"compared with the baseline {baseline}:" in out
    assert "baseline  now    change" in out and f"{then:.3f}" in out and "REGRESSED" in out


def test_report_json_carries_fingerprints_and_environment(measured: tuple[Path, dict[str, Any]]) -> None:
    report = measured[1]
    assert set(report["fingerprint"]) == {"model_layout", "members", "nonmembers", "attack_settings", "inputs"}
    assert report["fingerprint"]["members"]["count"] == 40
    assert {"naa_guard", "torch", "diffusers", "device", "dtype", "seed", "policy_sha256"} <= set(report["environment"])
    assert len(report["environment"]["policy_sha256"]) == 64
