"""A re-gate whose scores are all stored starts no torchrun (issue 18, item 4): ``--nproc``, ``--naa-nproc``.

A first ``--nproc 2`` run (real torchrun, gloo) fills the chunk store; the second run, with the
launcher replaced by a spy, must give the same verdict and report without calling it. With a
chunk missing from the store the launcher is called as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_tiny_setup
from jsondiff import EXPECTED_DIFFERENCES, differences

from naa_guard import launcher
from naa_guard.cli import main
from naa_guard.errors import DistributedError
from naa_guard.policy import load_policy
from naa_guard.scoring.storedfirst import may_regate_here

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
class Spy:
    """Stands in for launcher.launch: records each call; answers ``outcome`` (None: no torchrun may start here)."""

    def __init__(self, outcome: object = None) -> None:
        self.calls: list[tuple[int, list[str]]] = []
        self.outcome = outcome

    def __call__(self, nproc: int, arguments: list[str], capture: bool = False) -> tuple[object, str]:
        self.calls.append((nproc, list(arguments)))
        if self.outcome is None:
            raise DistributedError("the spy: torchrun was started")
        return self.outcome, ""


def _policy(root: Path) -> Path:
    return make_tiny_setup(root, thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}", batch_size=4)


def test_cli_nproc_regate_from_a_complete_store_starts_no_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _policy(tmp_path)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    scored = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--nproc", "2", "--cache", str(cache), "--chunk-size", "8", "--json", str(tmp_path / "scored.json")],
                            capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)  # fmt: skip
    assert scored.returncode == 0, scored.stdout + scored.stderr
    spy = Spy()
    monkeypatch.setattr(launcher, "launch", spy)
    code = main(["audit", str(policy), "--nproc", "2", "--cache", str(cache), "--chunk-size", "8", "--json", str(tmp_path / "regate.json")])
    out, err = capsys.readouterr()
    assert spy.calls == [] and code == 0, err
    assert "no torchrun started" in err
    verdicts = [[line for line in text.splitlines() if "verdict:" in line] for text in (scored.stdout, out)]
    assert verdicts[0] == verdicts[1] and len(verdicts[0]) == 1 and verdicts[0][0].startswith("verdict: PASSED")
    first, second = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("scored", "regate"))
    assert first["attacks"]["naa"]["cached"] is False and second["attacks"]["naa"]["cached"] is True
    assert differences(first, second) == EXPECTED_DIFFERENCES

    # One stored chunk gone: torchrun is started (the spy's outcome stands in for its ranks), nothing written here.
    chunk = sorted(cache.rglob("*.npz"))[0]
    chunk.unlink()
    spy = Spy(launcher.Outcome(1))
    monkeypatch.setattr(launcher, "launch", spy)
    assert main(["audit", str(policy), "--nproc", "2", "--cache", str(cache), "--chunk-size", "8", "--json", str(tmp_path / "partial.json")]) == 1
    assert [nproc for nproc, _ in spy.calls] == [2] and "--cache" in spy.calls[0][1]
    assert not (tmp_path / "partial.json").exists() and "verdict" not in capsys.readouterr().out
    # Without a chunk store, or with an empty one (a first run), nothing is tried here: torchrun at once.
    (tmp_path / "empty").mkdir()
    assert may_regate_here(load_policy(policy), cache) and not may_regate_here(load_policy(policy), tmp_path / "empty")
    spy = Spy(launcher.Outcome(0))
    monkeypatch.setattr(launcher, "launch", spy)
    assert main(["audit", str(policy), "--nproc", "2", "--quiet"]) == 0 and len(spy.calls) == 1


def test_plugin_naa_nproc_regate_from_a_complete_store_starts_no_torchrun(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy(pytester.path)
    scored = pytester.runpytest(str(policy), "--naa-nproc", "2", "-q", "-p", "no:randomly", "--naa-report", "first")
    scored.assert_outcomes(passed=1)
    scored.stdout.fnmatch_lines(["*scores computed, model loaded*"])
    spy = Spy()
    monkeypatch.setattr(launcher, "launch", spy)
    again = pytester.runpytest(str(policy), "--naa-nproc", "2", "-q", "-p", "no:randomly", "--naa-report", "second")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*cached scores, model not loaded*"])
    assert spy.calls == []
    first, second = (json.loads(next((pytester.path / name).rglob("report.json")).read_text()) for name in ("first", "second"))
    assert differences(first, second) == EXPECTED_DIFFERENCES

    # One stored chunk gone: the plugin starts torchrun (the spy answers for it with an error outcome).
    chunks = sorted((pytester.path / ".pytest_cache").rglob("naa-guard-chunks/**/*.npz"))
    assert chunks, "the first run stored no chunk"
    chunks[0].unlink()
    spy = Spy(SimpleNamespace(error=DistributedError("the spy's torchrun failed"), result=None, code=2))
    monkeypatch.setattr(launcher, "launch", spy)
    partial = pytester.runpytest(str(policy), "--naa-nproc", "2", "-q", "-p", "no:randomly")
    partial.assert_outcomes(errors=1)  # the gate item errors with the launcher's error: no verdict
    assert [nproc for nproc, _ in spy.calls] == [2]
    partial.stdout.fnmatch_lines(["*the spy's torchrun failed*"])
