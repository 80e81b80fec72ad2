"""One rule for warnings and outputs in both faces (issue 14, item 11): pytest shows the audit's warnings
in its terminal summary and as JUnit properties, as the CLI prints them, and a report that cannot be
written is an error in pytest as in the CLI (a requested report is part of the gate's output)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import make_images, make_tiny_setup

from naa_guard.cli import main

pytest_plugins = ["pytester"]

FITTED = "24 of 24 members image(s) were fitted to the model's 8x8 input with data.fit: pad"


@pytest.fixture(scope="module", autouse=True)
def engine_imported(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Import the engine here first: pytester's in-process runs cannot import extension modules twice."""
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy
    from naa_guard.reports.write import write_reports

    folder = tmp_path_factory.mktemp("engine")
    write_reports(audit(load_policy(make_tiny_setup(folder)), progress=False), folder, plots=True)


def _fitted_setup(folder: Path, extra: str = "") -> Path:
    """Return a tiny policy whose 6x6 images are padded to the model's 8x8 (a warning in the result)."""
    policy = make_tiny_setup(folder, extra=extra)
    make_images(folder / "members.npz", 24, size=6, seed=1)
    make_images(folder / "nonmembers.npz", 24, size=6, seed=2)
    policy.write_text(policy.read_text().replace("nonmembers: ./nonmembers.npz}", "nonmembers: ./nonmembers.npz, fit: pad}"))
    return policy


def test_the_audits_warnings_reach_the_terminal_and_junit_as_in_the_cli(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _fitted_setup(pytester.path)
    assert main(["audit", str(policy), "--quiet", "--no-reports"]) == 0
    assert f"warning: {FITTED}" in capsys.readouterr().out  # the CLI's rule
    result = pytester.runpytest("--junitxml=junit.xml", "--naa-no-cache")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"tiny.naa.yaml: warning: {FITTED}", "tiny.naa.yaml: warning: 24 of 24 nonmembers image(s) were fitted*"])
    assert result.stdout.str().count(f"warning: {FITTED}") == 1
    case = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    warnings = [prop.get("value") for prop in case.iter("property") if prop.get("name") == "warning"]
    assert FITTED in warnings and len(warnings) == 2


def test_a_report_that_cannot_be_written_is_an_error_in_both_faces(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    policy = make_tiny_setup(pytester.path, extra="report: {dir: ./taken}\n")
    (pytester.path / "taken").write_text("a file where the report folder should go\n", encoding="utf-8")
    assert main(["audit", str(policy), "--quiet"]) == 2
    assert "OutputError" in capsys.readouterr().err
    result = pytester.runpytest("--naa-no-cache")
    result.assert_outcomes(errors=1)  # before: a PASS with a Python warning in the summary
    result.stdout.fnmatch_lines(["*OutputError: *report.dir *taken is a file, not a folder*"])
    (pytester.path / "elsewhere").write_text("", encoding="utf-8")
    result = pytester.runpytest("--naa-no-cache", "--naa-report", "elsewhere")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*OutputError: --naa-report *elsewhere*tiny*"])
