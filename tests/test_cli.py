"""The naa-guard command line: exit codes, the table, the JSON report and the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from naa_guard.cli import main


def test_passing_audit_exits_0_and_prints_the_table(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tiny_setup), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "attack  metric  value  95% CI" in out
    assert "naa     AUC" in out and "PASS" in out and "verdict: PASSED" in out


def test_failing_gate_exits_1(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_setup.write_text(tiny_setup.read_text().replace("auc: 0.99", "auc: 0.5, decision: point"))
    assert main(["audit", str(tiny_setup), "--quiet"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_invalid_policy_exits_2_with_message_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "bad.naa.yaml"
    policy.write_text("version: 1\nmodel: {path: m}\ndata: {members: a}\n")
    assert main(["audit", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "PolicyError" in err and "data.nonmembers: required key is missing" in err and "Traceback" not in err


def test_missing_model_exits_2(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_setup.write_text(tiny_setup.read_text().replace("./model", "./absent"))
    assert main(["audit", str(tiny_setup), "--quiet"]) == 2
    assert "TargetError" in capsys.readouterr().err


def test_overrides_and_json_report(tiny_setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "audit.json"
    assert main(["audit", str(tiny_setup), "--quiet", "--limit", "20", "--batch-size", "5", "--device", "cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n_members"] == 20 and report["limit"] == 20 and report["device"] == "cpu"
    assert report["attacks"]["naa"]["queries_per_sample"] == 5


def test_batch_size_zero_is_refused(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tiny_setup), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_report_dir_writes_json_and_markdown(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_setup.write_text(tiny_setup.read_text() + "report: {dir: ./out}\n")
    assert main(["audit", str(tiny_setup), "--quiet"]) == 0
    folder = tiny_setup.parent / "out"
    assert json.loads((folder / "report.json").read_text())["name"] == "tiny"
    assert "| naa | AUC |" in (folder / "report.md").read_text()
    assert (folder / "roc.png").stat().st_size > 0 and (folder / "scores_naa.png").is_file()


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "naa" in schema["properties"]["attacks"]["properties"]
