"""Issue 28: the reusable GitHub Action (action.yml) and its script, naa_guard.reports.action.

The script runs pytest on the policies, writes the verdict into the step summary (the plugin adds
the gate table), sets the outputs verdict / worst-auc and leaves the reports and the JUnit file in
the report folder. Fail closed: no policy, an edited report or a pytest failure without a failing
report is ERROR, never PASS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_card import demo_policy

from naa_guard.reports.action import decide, expand_policies, main

ROOT = Path(__file__).resolve().parents[1]


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines())


def test_the_action_script_gates_the_demo_policy_and_writes_summary_outputs_and_reports(tmp_path: Path) -> None:
    demo_policy(tmp_path)
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs), "CI": "true"}
    command = [sys.executable, "-m", "naa_guard.reports.action", "--policies=*.naa.yaml", "--report-dir=naa-report", "--extra-args=--naa-no-cache -p no:cacheprovider"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr  # the demo leaks: pytest fails
    written = _outputs(outputs)
    report = json.loads((tmp_path / "naa-report" / "demo" / "report.json").read_text(encoding="utf-8"))
    worst = max(gate["value"] for gate in report["gates"] if gate["metric"] == "auc")
    assert written["verdict"] == "FAIL" and float(written["worst-auc"]) == round(worst, 6) and worst > 0.6
    text = summary.read_text(encoding="utf-8")
    assert "### naa-guard verdict: FAIL" in text and "worst gated leak AUC" in text
    table = text.split("### naa-guard verdict")[0]  # the plugin's gate table comes first, one row per gated row
    assert "| policy | attack | gate |" in table and sum("| naa |" in line for line in table.splitlines()) == len(report["gates"]) == 2
    folder = tmp_path / "naa-report"
    assert {"report.json", "report.md", "report.html", "roc.png"} <= {path.name for path in (folder / "demo").iterdir()}
    assert (folder / "naa-junit.xml").is_file()


def test_no_policy_or_a_glob_matching_nothing_is_an_error(tmp_path: Path, monkeypatch: object) -> None:
    outputs = tmp_path / "outputs.txt"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))  # type: ignore[attr-defined]
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)  # type: ignore[attr-defined]
    assert main([f"--policies={tmp_path}/*.naa.yaml", f"--report-dir={tmp_path / 'r'}"]) == 2
    assert _outputs(outputs)["verdict"] == "ERROR"
    assert expand_policies("") == ([], ["policies: no policy given"])


def test_the_verdict_is_pass_only_when_pytest_and_every_report_agree() -> None:
    passing = {"gates": [{"status": "pass", "value": 0.5, "limit": 0.6}]}
    failing = {"gates": [{"status": "fail", "value": 0.7, "limit": 0.6}]}
    assert decide(0, {Path("a"): passing}, []) == ("PASS", [])
    assert decide(1, {Path("a"): passing}, [])[0] == "ERROR"  # a policy errored before writing its report
    assert decide(0, {Path("a"): failing}, [])[0] == "ERROR"
    assert decide(1, {Path("a"): failing}, [])[0] == "FAIL"
    assert decide(0, {}, [])[0] == "ERROR" and decide(0, {Path("a"): passing}, ["report x: edited"])[0] == "ERROR"
    assert decide(2, {Path("a"): passing}, [])[0] == "ERROR"


def test_action_yml_is_a_composite_action_calling_the_script_and_uploading_always() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    assert action["runs"]["using"] == "composite"
    assert {"policies", "report-dir", "baseline", "extra-args", "python-version", "torch"} <= set(action["inputs"])
    assert action["inputs"]["torch"]["default"] == "cpu" and set(action["outputs"]) == {"verdict", "worst-auc"}
    steps = action["runs"]["steps"]
    assert "download.pytorch.org/whl/cpu" in "".join(step.get("run", "") for step in steps)
    assert any("python -m naa_guard.reports.action" in step.get("run", "") for step in steps)
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "${{ inputs.report-dir }}"
    assert all("${{ inputs." not in step.get("run", "") for step in steps)  # inputs reach the shell through env, never spliced into it
