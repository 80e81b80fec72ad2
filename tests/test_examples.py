"""The CI example in examples/ must stay a valid workflow that uses the naa-guard action (action.yml)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_github_actions_example_uses_the_action_on_the_policies() -> None:
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["naa-guard"]["steps"]
    gate = next(step for step in steps if str(step.get("uses", "")).endswith("/naa-guard@v1"))
    assert gate["with"]["policies"] == "policies/*.naa.yaml"
    assert [step["uses"] for step in steps] == ["actions/checkout@v4", gate["uses"]]  # the action does the rest
    action = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
    assert set(gate["with"]) <= set(action["inputs"])
    assert "examples/github-actions.yml" in (ROOT / "README.md").read_text(encoding="utf-8")
