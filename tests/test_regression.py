"""Tests of the regression gate on the same samples (issue 14 item 5 and item 10's baseline layout message).

The fake attack's member signal comes from the "model" (the target's ``gain``) and its noise from
each sample's key, so two releases of a model score the same samples with the same noise: what
changes between a baseline and now is the leak alone, as with a retrained checkpoint.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_images, make_tiny_model, write_policy
from fakes import NoQueryAttack, is_member

from naa_guard.attacks import ATTACKS, AttackParams
from naa_guard.audit import audit
from naa_guard.errors import BaselineError
from naa_guard.policy import load_policy
from naa_guard.verdict.baseline import fingerprint_differences


class ModelShift(NoQueryAttack):
    """Score = target.gain * is_member + the sample's own standard normal noise."""

    name = "model_shift"
    Params = AttackParams
    scored: ClassVar[list[int]] = []

    def score(self, target, x0, sample_keys, seed, cond=None):  # type: ignore[no-untyped-def]
        keys = sample_keys.tolist()
        ModelShift.scored.extend(keys)
        noise = [float(np.random.default_rng([11, key]).normal()) for key in keys]
        return torch.tensor([target.gain * is_member(key) + n for key, n in zip(keys, noise)], dtype=torch.float64)


class Release:
    """A model release as the attack sees it: its leak strength only."""

    sample_size, in_channels, device = 8, 1, torch.device("cpu")
    alphas_cumprod = torch.ones(1000)

    def __init__(self, gain: float) -> None:
        self.gain = gain


@pytest.fixture
def releases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a policy over 200 + 200 images with the model_shift attack and max_increase 0.02 (its baseline given per audit)."""
    monkeypatch.setitem(ATTACKS, "model_shift", ModelShift)
    monkeypatch.setattr(ModelShift, "scored", [])
    make_tiny_model(tmp_path / "model")  # read for its layout only
    make_images(tmp_path / "members.npz", 200, seed=1)
    make_images(tmp_path / "nonmembers.npz", 200, seed=2)
    return write_policy(
        tmp_path / "release.naa.yaml",
        """
        version: 1
        model: {path: ./model}
        data: {members: ./members.npz, nonmembers: ./nonmembers.npz}
        attacks: {model_shift: {}}
        thresholds: {auc: 0.95, tpr_at_1pct_fpr: null}
        checks: {shift_auc: null}
        runtime: {device: cpu, seed: 0}
        """,
    )


def _release_report(policy_path: Path, gain: float, folder: Path) -> Path:
    result = audit(load_policy(policy_path), target=Release(gain), progress=False)
    path = folder / f"release-{gain}.json"
    path.write_text(json.dumps(result.to_dict()), encoding="utf-8")
    return path


def _with_max_increase(policy_path: Path, extra: str = "") -> Path:
    policy_path.write_text(policy_path.read_text().replace("tpr_at_1pct_fpr: null}", f"tpr_at_1pct_fpr: null, max_increase: 0.02{extra}}}"))
    return policy_path


@pytest.mark.parametrize("decision", ["upper_ci", "point"])
def test_an_auc_rise_on_the_same_samples_fails_the_regression_gate(releases: Path, tmp_path: Path, decision: str) -> None:
    """The issue's case: a rise of about 0.12 on the same 200 + 200 samples, which the CI-overlap rule passed at 0.02."""
    baseline = _release_report(releases, 0.27, tmp_path)
    then = json.loads(baseline.read_text())["attacks"]["model_shift"]["leak_auc"]
    policy = load_policy(_with_max_increase(releases, f", decision: {decision}"))
    result = audit(policy, target=Release(0.72), progress=False, baseline=baseline)
    (gate,) = result.gates
    record = gate.baseline
    assert record is not None and 0.55 < then < 0.60 and 0.67 < gate.value < 0.72, (then, gate.value)
    assert record["beyond_overlap"] <= 0.02  # the old rule (now CI low - baseline CI high) would have passed it
    assert gate.value <= gate.limit and gate.status == "fail" and record["regressed"]
    assert record["change"] == pytest.approx(gate.value - then)
    low, high = record["change_ci"]
    assert 0.02 < low <= record["change"] <= high  # paired: the interval of the change is narrow
    assert f"rose from {then:.3f} (baseline" in gate.message and "on the same samples" in gate.message
    from naa_guard.reports.text import format_table

    table = format_table(result)  # the reports state the paired rule, not the CI-overlap one
    assert "paired CI of the change" in table and f"{record['gated_change']:+.3f} ({decision})" in table and "REGRESSED" in table


def test_the_same_release_passes_the_regression_gate(releases: Path, tmp_path: Path) -> None:
    baseline = _release_report(releases, 0.27, tmp_path)
    (gate,) = audit(load_policy(_with_max_increase(releases)), target=Release(0.27), progress=False, baseline=baseline).gates
    assert gate.status == "pass" and gate.baseline is not None and gate.baseline["change_ci"] == [0.0, 0.0] and not gate.baseline["regressed"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda auc: auc.update(ci=[0.40, 5.0]), "is out of range (expected 0 <= ci_low <= value <= ci_high <= 1)"),
        (lambda auc: auc.update(value=auc["value"] - 0.05), "but its stored scores give"),
    ],
)
def test_a_hand_edited_baseline_is_an_error_before_scoring(releases: Path, tmp_path: Path, edit, words: str) -> None:  # type: ignore[no-untyped-def]
    baseline = _release_report(releases, 0.27, tmp_path)
    report = json.loads(baseline.read_text())
    edit(report["attacks"]["model_shift"]["metrics"]["metrics"]["auc"])
    baseline.write_text(json.dumps(report), encoding="utf-8")
    ModelShift.scored.clear()
    with pytest.raises(BaselineError, match="out of range|stored scores give") as error:
        audit(load_policy(_with_max_increase(releases)), target=Release(0.72), progress=False, baseline=baseline)
    assert words in str(error.value)
    assert ModelShift.scored == []  # refused before any scoring


def test_a_baseline_that_is_this_runs_own_report_is_refused(releases: Path, tmp_path: Path) -> None:
    releases.write_text(releases.read_text() + "report: {dir: ./naa-report}\nbaseline: ./naa-report/report.json\n")
    (tmp_path / "naa-report").mkdir()
    (tmp_path / "naa-report" / "report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BaselineError, match=r"is the report this run writes .*copy the released report elsewhere"):
        audit(load_policy(releases), target=Release(0.27), progress=False)
    assert ModelShift.scored == []


def test_cli_refuses_a_baseline_that_is_its_own_json_output(releases: Path, tmp_path: Path) -> None:
    releases.write_text(releases.read_text().replace("{model_shift: {}}", "{naa: {}}"))  # a registered attack: a new process
    out = tmp_path / "out.json"
    out.write_text("{}", encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-m", "naa_guard", "audit", str(releases), "--json", str(out), "--baseline", str(out)], capture_output=True, text=True, timeout=300
    )  # fmt: skip
    assert run.returncode == 2 and "is the report this run writes" in run.stderr, run.stderr


@pytest.mark.parametrize(("change", "key"), [("data: {members: ./members.npz, nonmembers: ./nonmembers.npz, fit: resize}", "fit: None (baseline) vs 'resize' (now)")])
def test_a_changed_input_is_a_baseline_mismatch_naming_the_key(releases: Path, tmp_path: Path, change: str, key: str) -> None:
    baseline = _release_report(releases, 0.27, tmp_path)
    releases.write_text(releases.read_text().replace("data: {members: ./members.npz, nonmembers: ./nonmembers.npz}", change))
    ModelShift.scored.clear()
    with pytest.raises(BaselineError, match="attack inputs differs") as error:
        audit(load_policy(releases), target=Release(0.27), progress=False, baseline=baseline)
    assert key in str(error.value)
    assert ModelShift.scored == []  # checked before any scoring


def test_a_changed_prompt_or_captions_is_a_difference_naming_the_key(releases: Path, tmp_path: Path) -> None:
    then = json.loads(_release_report(releases, 0.27, tmp_path).read_text())["fingerprint"]
    now = json.loads(json.dumps(then))
    now["inputs"].update(prompt="a photo of sks dog", digest="0" * 64)
    assert fingerprint_differences(then, now) == ["attack inputs differs (prompt: None (baseline) vs 'a photo of sks dog' (now))"]
    now["inputs"]["captions"] = "1" * 64
    assert "captions: " in fingerprint_differences(then, now)[0]


def test_a_baseline_of_another_model_layout_names_the_config_key(releases: Path, tmp_path: Path) -> None:
    baseline = _release_report(releases, 0.27, tmp_path)
    make_tiny_model(tmp_path / "model", prediction_type="v_prediction")  # the same folder, another scheduler config
    with pytest.raises(BaselineError, match="model layout differs") as error:
        audit(load_policy(releases), target=Release(0.27), progress=False, baseline=baseline)
    assert "scheduler.prediction_type: 'epsilon' (baseline) vs 'v_prediction' (now)" in str(error.value)
