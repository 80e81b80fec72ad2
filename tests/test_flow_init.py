"""``naa-guard init`` on SD3 / Flux folders writes the rectified-flow scan (issue 26 item 3): the loss at several s as
tuned candidates chosen on the calibration split, gates set for the evaluation part, the written policy audits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny_flow import make_tiny_flux, make_tiny_sd3
from tiny_sd import write_set
from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.cli import main
from naa_guard.policy import load_policy
from naa_guard.policy.flowinit import LOSS_SCAN, PIA_SCAN, SIMA_SCAN
from naa_guard.verdict.gatelist import gated_rows
from naa_guard.verdict.resolvable import evaluated_counts, smallest_certifiable_auc, unresolvable_gates

pytestmark = pytest.mark.usefixtures("one_thread")


def _init(tmp_path: Path, model: Path, count: int, capsys: pytest.CaptureFixture[str]) -> Path:
    members, nonmembers = write_set(tmp_path / "sets", "a", count, seed=1), write_set(tmp_path / "sets", "b", count, seed=2)
    output = tmp_path / "p.naa.yaml"
    assert main(["init", str(model), str(members), str(nonmembers), "-o", str(output)]) == 0, capsys.readouterr().err
    return output


def _audit(tmp_path: Path, output: Path, capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    text = output.read_text().replace("device: auto", "device: cpu").replace("batch_size: 64", "batch_size: 16")
    output.write_text(text)
    code = main(["audit", str(output), "--quiet", "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    return json.loads((tmp_path / "r.json").read_text())


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_init_writes_the_scan_as_tuned_candidates_and_the_policy_audits(tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / family
    (make_tiny_flux if family == "flux" else make_tiny_sd3)(model)
    output = _init(tmp_path, model, 48, capsys)  # the fewest per side a calibration split of 10 and an evaluation part of 20+ allow
    text = output.read_text()
    assert "arXiv 2606.07271" in text and "bell-shaped" in text and "calibration split" in text
    assert ("# guidance: 3.5" in text) == (family == "flux") and f"# max_sequence_length: {512 if family == 'flux' else 256}" in text
    policy = load_policy(output)
    scans = {name: params.grid["t"] for name, params in policy.attacks.items() if isinstance(params, AttackCandidates)}
    assert scans == {"loss": LOSS_SCAN, "sima": SIMA_SCAN, "pia": PIA_SCAN} and policy.tune.fraction == 0.2
    members, nonmembers, _, tuned = evaluated_counts(policy, None)
    assert tuned and (members, nonmembers) == (38, 38)
    assert policy.thresholds.auc == smallest_certifiable_auc(38, 38, 0.95)  # set for the evaluation part, not the 48 listed
    assert unresolvable_gates(policy, members, nonmembers) == []
    report = _audit(tmp_path, output, capsys)
    layout = report["fingerprint"]["model_layout"]  # the report states the conditioning used: the pipelines' defaults here
    assert ("T5 tokens 512, guidance 3.5" if family == "flux" else "no T5: 256 zero tokens") in layout["parametrization"] in layout["summary"]
    loss = report["attacks"]["loss"]
    assert loss["tuning"]["chosen"]["t"] in LOSS_SCAN and len(loss["tuning"]["candidates"]) == len(LOSS_SCAN)
    gates = {(gate["attack"], gate["metric"]) for gate in report["gates"]}
    assert {(row.attack, row.metric) for row in gated_rows(policy)} == gates and ("loss", "auc") in gates  # the tuned row, under its own name


def test_init_on_sets_too_small_to_split_writes_one_setting_per_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tiny_sd3(tmp_path / "sd3")
    output = _init(tmp_path, tmp_path / "sd3", 47, capsys)
    text = output.read_text()
    assert "needs at least 48 members and 48 non-members" in text and "tune:" not in text
    policy = load_policy(output)
    assert not any(isinstance(params, AttackCandidates) for params in policy.attacks.values())
    assert {name: params.t for name, params in policy.attacks.items()} == {"loss": 200, "sima": 10, "pia": 300, "naa": 80}
    assert policy.thresholds.auc == smallest_certifiable_auc(47, 47, 0.95)


def test_init_on_an_sd_pipeline_writes_no_scan(tmp_path: Path) -> None:
    from tiny_sd import make_tiny_sd

    from naa_guard.init_policy import write_initial_policy

    make_tiny_sd(tmp_path / "sd")
    members, nonmembers = write_set(tmp_path / "sets", "a", 60, seed=1), write_set(tmp_path / "sets", "b", 60, seed=2)
    text = write_initial_policy(tmp_path / "sd", members, nonmembers, tmp_path / "sd.naa.yaml").read_text()
    assert "tune:" not in text and "max_sequence_length" not in text and "as evaluated" not in text
    assert "attacks:               # the strong cheap peers, 9 queries per image in all" in text
    assert "auc: 0.65           # certifiable: the smallest AUC limit 60 members / 60 non-members can certify is 0.65" in text
