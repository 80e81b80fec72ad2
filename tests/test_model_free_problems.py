"""Every problem found without a model is reported at once, and the CLI and pytest report the same ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_images, make_tiny_setup, write_policy

from naa_guard.cli import main

pytest_plugins = ["pytester"]

POLICY = """
    version: 1
    model: {{path: ./missing-model}}
    data: {{members: ./members.npz, nonmembers: ./nonmembers.npz{control}}}
    attacks: {{loss: {{}}}}
    thresholds: {{auc: 0.55, tpr_at_1pct_fpr: null, epsilon_lb: 0.5}}
    runtime: {{device: cpu}}
    """
MODEL = "TargetError: model.path * does not exist or is not a folder*"
UNRESOLVABLE = "*thresholds.auc: the AUC gate (limit 0.55) cannot be resolved with 40 members / 40 non-members*"
CONTROL = "*DataError: The control source * does not exist*"


def _policy(root: Path, control: str = "") -> Path:
    make_images(root / "members.npz", 40, seed=1)
    make_images(root / "nonmembers.npz", 40, seed=2)
    return write_policy(root / "p.naa.yaml", POLICY.format(control=control))


def _cli(policy: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["audit", str(policy), "--quiet", "--no-reports"])
    return code, capsys.readouterr().err.splitlines()


def test_a_missing_model_and_an_unresolvable_gate_are_reported_together_by_both_faces(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(pytester.path)
    code, err = _cli(policy, capsys)
    assert code == 2
    pytest.LineMatcher(err).fnmatch_lines(["*2 problems, all found before any model loads; fix each of them:", f"1. {MODEL}", f"2. PolicyError: {UNRESOLVABLE}"])
    result = pytester.runpytest_inprocess(str(policy), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # the unresolvable gate is a collection error: no item runs
    result.stdout.fnmatch_lines([f"PolicyError: {UNRESOLVABLE}", "*", f"also found before any model loads: {MODEL}"], consecutive=False)


def test_a_missing_model_and_a_missing_set_are_reported_together_by_both_faces(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(pytester.path, control=", control: ./nope.npz")
    code, err = _cli(policy, capsys)
    assert code == 2
    pytest.LineMatcher(err).fnmatch_lines(["*2 problems, all found before any model loads; fix each of them:", f"1. {MODEL}", f"2. {CONTROL}"])
    result = pytester.runpytest_inprocess(str(policy), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)  # auc and epsilon_lb: each item errors with the CLI's list
    result.stdout.fnmatch_lines(["*2 problems, all found before any model loads; fix each of them:", f"1. {MODEL}", f"2. {CONTROL}"])


def test_an_unwritable_report_folder_and_a_missing_model_are_reported_together_by_both_faces(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(pytester.path)
    policy.write_text(policy.read_text() + "report: {dir: ./taken}\n")  # report.dir names a file
    (pytester.path / "taken").write_text("a file, not a folder")
    code = main(["audit", str(policy), "--quiet"])
    assert code == 2
    report = "OutputError: *: report.dir * is a file, not a folder*"
    pytest.LineMatcher(capsys.readouterr().err.splitlines()).fnmatch_lines(["*3 problems, all found before any model loads; fix each of them:", f"1. {report}", f"2. {MODEL}", f"3. PolicyError: {UNRESOLVABLE}"])
    policy.write_text(policy.read_text().replace("auc: 0.55", "auc: 0.7"))  # resolvable: the items run, and each lists both problems
    assert main(["audit", str(policy), "--quiet"]) == 2
    pytest.LineMatcher(capsys.readouterr().err.splitlines()).fnmatch_lines(["*2 problems, all found before any model loads; fix each of them:", f"1. {report}", f"2. {MODEL}"])
    result = pytester.runpytest_inprocess(str(policy), "-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*2 problems, all found before any model loads; fix each of them:", f"1. {report}", f"2. {MODEL}"])


def test_each_face_runs_the_model_free_checks_once_per_audit(tmp_path: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The faces check before the engine's imports and hand audit() checked=True: the sets are not listed again for the same checks."""
    import importlib

    checks = importlib.import_module("naa_guard.policy.preflight")  # the module; naa_guard.policy.preflight names its function
    calls: list[str] = []
    real = checks.model_free_problems
    monkeypatch.setattr(checks, "model_free_problems", lambda *a, **k: calls.append("checked") or real(*a, **k))
    policy = make_tiny_setup(tmp_path, attacks="{loss: {}}")
    assert main(["audit", str(policy), "--quiet", "--no-reports"]) in (0, 1)
    assert calls == ["checked"]
    calls.clear()
    result = pytester.runpytest_inprocess(str(policy), "-p", "no:cacheprovider", "--naa-no-cache")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert calls == ["checked"]
