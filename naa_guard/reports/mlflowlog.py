"""``naa-guard audit --mlflow`` / ``pytest --naa-mlflow``: an audit's results in MLflow (the ``[mlflow]`` extra).

Logged into the active run when there is one (the CLI: that run itself; pytest: a nested run per
policy), else into a new run under ``MLFLOW_TRACKING_URI`` (MLflow's default store when unset):

- params: the policy's settings as the report states them (name, counts, seed, dtype, confidence,
  each attack's parameters, each gate's limit and decision);
- metrics: every gated row's value, interval ends and limit (``naa.auc``, ``naa.auc.ci_low``,
  ``naa.auc.ci_high``, ``naa.auc.limit``; ``naa/ref.auc`` for a calibrated result);
- tags: ``naa_guard.verdict`` (PASS, NOT CERTIFIED, FAIL, ERROR) and one ``naa_guard.gate.<attack>.<metric>`` per row;
- artifacts: report.html, report.json, report.md and the plots.

What is logged is read back from the report.json the audit wrote, checked first
(:func:`naa_guard.reports.readback.read_report`): exactly its gated rows and verdicts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import OutputError
from naa_guard.reports.readback import read_report, verdict_word

if TYPE_CHECKING:
    from naa_guard.result import AuditResult

ARTIFACTS = ("report.html", "report.json", "report.md")
INSTALL = 'Fix: pip install "naa-guard[mlflow]", or drop --mlflow / --naa-mlflow.'


def require_mlflow() -> None:
    """Return None; raise OutputError when the mlflow client cannot be imported (checked before any scoring)."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise OutputError(f"--mlflow / --naa-mlflow needs the mlflow client, which cannot be imported ({exc}). {INSTALL}") from None


def params_of(report: dict[str, Any]) -> dict[str, str]:
    """Return the run's params: the policy's settings as the report states them."""
    settings = (report.get("fingerprint") or {}).get("attack_settings") or {}
    params = {
        "policy": report.get("name"), "n_members": report.get("n_members"), "n_nonmembers": report.get("n_nonmembers"),
        "limit": report.get("limit"), "seed": report.get("seed"), "dtype": report.get("dtype"), "confidence": settings.get("confidence"),
        "conditioning": report.get("conditioning"), "naa_guard_version": report.get("naa_guard_version"),
    }  # fmt: skip
    for name, attack in report["attacks"].items():
        params.update({f"attack.{name}.{key}": value for key, value in (attack.get("params") or {}).items() if key != "name"})
    for gate in report["gates"]:
        params[f"threshold.{gate['metric']}"] = gate["limit"]
        params[f"threshold.{gate['metric']}.decision"] = gate["decision"]
    return {key: str(value) for key, value in params.items()}


def metrics_of(report: dict[str, Any]) -> dict[str, float]:
    """Return every gated row's value, interval ends and limit (a NaN value of an errored row is left out: its tag says ERROR)."""
    metrics = {}
    for gate in report["gates"]:
        key = f"{gate['attack']}.{gate['metric']}"
        figures = {key: gate["value"], f"{key}.ci_low": gate["ci"][0], f"{key}.ci_high": gate["ci"][1], f"{key}.limit": gate["limit"]}
        metrics.update({name: float(value) for name, value in figures.items() if isinstance(value, (int, float)) and value == value})
    return metrics


def tags_of(report: dict[str, Any]) -> dict[str, str]:
    """Return the verdict tag and one verdict tag per gated row."""
    tags = {"naa_guard.verdict": verdict_word(report), "naa_guard.policy": str(report.get("name"))}
    tags.update({f"naa_guard.gate.{gate['attack']}.{gate['metric']}": gate["status"].upper() for gate in report["gates"]})
    return tags


def log_report_dir(report_dir: Path, *, nested: bool = False) -> str:
    """Log the checked report folder ``report_dir`` into MLflow; return the run id."""
    report = read_report(Path(report_dir) / "report.json")
    require_mlflow()
    import mlflow

    try:
        active = mlflow.active_run()
        started = active is None or nested
        run = mlflow.start_run(run_name=f"naa-guard {report.get('name')}", nested=active is not None) if started else active
        try:
            mlflow.log_params(params_of(report))
            mlflow.log_metrics(metrics_of(report))
            mlflow.set_tags(tags_of(report))
            for path in [*(Path(report_dir) / name for name in ARTIFACTS), *sorted(Path(report_dir).glob("*.png"))]:
                if path.is_file():
                    mlflow.log_artifact(str(path))
        finally:
            if started:
                mlflow.end_run()
    except mlflow.exceptions.MlflowException as exc:
        raise OutputError(f"cannot log the audit to MLflow ({mlflow.get_tracking_uri()}): {exc}. Fix: check MLFLOW_TRACKING_URI, or drop --mlflow / --naa-mlflow.") from None
    return run.info.run_id


def log_result(result: AuditResult, report_dir: Path | None, *, nested: bool = False) -> str:
    """Log an audit into MLflow from its report folder (written to a temporary folder when there is none); return the run id."""
    if report_dir is not None:
        return log_report_dir(report_dir, nested=nested)
    from naa_guard.reports.write import write_reports

    with tempfile.TemporaryDirectory(prefix="naa-guard-mlflow-") as folder:
        write_reports(result, Path(folder))
        return log_report_dir(Path(folder), nested=nested)
