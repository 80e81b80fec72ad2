"""Issue 28: ``naa-guard audit --mlflow`` / ``pytest --naa-mlflow`` log into MLflow, read back here through MLflow's own client.

A real local store (a ``file:`` tracking URI under tmp_path), never the network: params (the
policy's settings), every gated row's value, interval and limit as metrics, the verdict as a tag,
report.html / report.json and the plots as artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_card import demo_policy

from naa_guard.cli import main
from naa_guard.errors import ReportError

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    uri = (tmp_path / "mlruns").as_uri()
    for name, value in {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


def _policy_with_reports(folder: Path) -> Path:
    policy = demo_policy(folder)
    policy.write_text(policy.read_text(encoding="utf-8") + f"report: {{dir: {folder / 'report'}}}\n", encoding="utf-8")
    return policy


def _check_run(run_id: str, report: dict) -> None:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["naa_guard.verdict"] == "FAIL"
    for gate in report["gates"]:
        key = f"{gate['attack']}.{gate['metric']}"
        assert run.data.metrics[key] == pytest.approx(gate["value"]) and run.data.metrics[f"{key}.limit"] == pytest.approx(gate["limit"])
        assert (run.data.metrics[f"{key}.ci_low"], run.data.metrics[f"{key}.ci_high"]) == pytest.approx(tuple(gate["ci"]))
        assert run.data.tags[f"naa_guard.gate.{key}"] == gate["status"].upper()
    gated = {key.rsplit(".", 1)[0] if key.endswith(("ci_low", "ci_high", "limit")) else key for key in run.data.metrics}
    assert gated == {f"{gate['attack']}.{gate['metric']}" for gate in report["gates"]}  # every gated row, no other
    assert run.data.params["attack.naa.t"] == "40" and run.data.params["threshold.auc"] == "0.6" and run.data.params["n_members"] == "40"
    assert {"report.html", "report.json", "roc.png", "scores_naa.png"} <= {entry.path for entry in client.list_artifacts(run_id)}


def test_audit_mlflow_logs_a_new_run_read_back_through_the_client(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(_policy_with_reports(tmp_path)), "--mlflow", "--quiet"]) == 1
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1 and f"MLflow run: {runs[0].info.run_id}" in capsys.readouterr().out
    _check_run(runs[0].info.run_id, json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One audit's report folder (written without MLflow), shared by the tests that log it."""
    folder = tmp_path_factory.mktemp("audited")
    assert main(["audit", str(_policy_with_reports(folder)), "--quiet"]) == 1
    return folder / "report"


def test_a_report_folder_is_logged_into_the_active_run(store: str, report_folder: Path) -> None:
    from naa_guard.reports.mlflowlog import log_report_dir

    with mlflow.start_run() as active:
        assert log_report_dir(report_folder) == active.info.run_id
        assert mlflow.active_run().info.run_id == active.info.run_id  # left open: it is the caller's run
    assert [run.info.run_id for run in mlflow.search_runs(search_all_experiments=True, output_format="list")] == [active.info.run_id]
    _check_run(active.info.run_id, json.loads((report_folder / "report.json").read_text(encoding="utf-8")))


def test_pytest_naa_mlflow_logs_each_policy(store: str, tmp_path: Path) -> None:
    demo_policy(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "demo.naa.yaml", "--naa-mlflow", "--naa-report", "rep", "--naa-no-cache", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert len(runs) == 1
    _check_run(runs[0].info.run_id, json.loads((tmp_path / "rep" / "demo" / "report.json").read_text(encoding="utf-8")))


def test_an_edited_report_is_not_logged(store: str, report_folder: Path, tmp_path: Path) -> None:
    from naa_guard.reports.mlflowlog import log_report_dir

    shutil.copytree(report_folder, tmp_path / "edited")
    path = tmp_path / "edited" / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    for gate in report["gates"]:
        gate.update(status="pass", passed=True)
    report["passed"] = True
    path.write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(ReportError):
        log_report_dir(path.parent)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
