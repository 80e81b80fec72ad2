"""The CI example in examples/ must stay a valid workflow that runs the README's gate command."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_github_actions_example_runs_the_gates_and_uploads_the_report() -> None:
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["naa-guard"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "pytest policies/ --junitxml=naa-junit.xml --naa-report naa-report" in commands
    assert "pip install naa-guard" in commands and "download.pytorch.org/whl/cpu" in commands
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "naa-report/" in upload["with"]["path"]
    assert "examples/github-actions.yml" in (ROOT / "README.md").read_text(encoding="utf-8")
