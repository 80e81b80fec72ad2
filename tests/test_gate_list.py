"""One list of gates, both faces: the CLI's table and exit code, the pytest items and the JUnit file
render :func:`naa_guard.verdict.gatelist.gated_rows`, for every policy shape the suite builds.

Each shape is audited by the CLI (``--json``) and by pytest through pytester (``--junitxml``); the
rows, their verdicts and the exit codes must agree. The LoRA case is the bug this guards against:
its calibrated ``loss/ref`` gate fails in the CLI (exit 1) and was no pytest item at all (exit 0).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FIXTURES, make_tiny_model, make_tiny_setup, write_policy

from naa_guard.cli import main
from naa_guard.errors import AuditInvalidError
from naa_guard.policy import load_policy
from naa_guard.verdict.gatelist import gated_rows, match_gates

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("one_thread")

SD = FIXTURES / "tiny_sd"


@pytest.fixture(scope="module", autouse=True)
def engine_imported(sd_target: object) -> None:
    """Import the engine (torch, diffusers, transformers, peft) before pytester's first run, which removes the modules first imported inside it."""
    import peft  # noqa: F401  # LoRA loading
    import sklearn.metrics  # noqa: F401

    import naa_guard.audit  # noqa: F401
    import naa_guard.reports.write  # noqa: F401

POINT = "{auc: 0.99, tpr_at_1pct_fpr: null, epsilon_lb: 0.5, decision: point}"


def _pixel(root: Path) -> Path:  # two attacks, as the sweep tests list them, and the epsilon gate
    return make_tiny_setup(root, attacks="{naa: {t: 40, stride: 10}, loss: {t: 50}}", thresholds=POINT, batch_size=16, name="pixel")


def _reference(root: Path) -> Path:
    make_tiny_model(root / "other", seed=5)
    policy = make_tiny_setup(root, attacks="{loss: {t: 100}}", thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}", name="reference")
    policy.write_text(policy.read_text().replace("model: {path: ./model}", "model: {path: ./model, reference: ./other}"))
    return policy


def _tuned(root: Path) -> Path:  # candidates: a 20% calibration split of 50 per side, gated on the other 40
    return make_tiny_setup(root, attacks="{loss: {t: [50, 100]}}", thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}", members=50, nonmembers=50, name="tuned")


def _latent(root: Path) -> Path:  # the tiny SD base memorised `members`: its loss gate fails
    root.mkdir(parents=True)
    return write_policy(root / "latent.naa.yaml", f"""
        version: 1
        name: latent
        model: {{path: {SD / 'model'}}}
        data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, conditioning: caption, limit: 20}}
        attacks: {{loss: {{}}}}
        thresholds: {{auc: 0.8, tpr_at_1pct_fpr: null, decision: point}}
        runtime: {{device: cpu, batch_size: 20, seed: 0}}
        checks: {{shift_auc: null}}
        """)


def _lora(root: Path) -> Path:
    """A LoRA with ``reference: base`` (what ``naa-guard init --lora`` writes), as tests/test_reference.py builds it:
    the raw loss passes (leak AUC about 0.45), the calibrated loss/ref fails (about 0.99)."""
    import csv
    import shutil

    rows = []
    (root / "mixed").mkdir(parents=True)
    for name in ("members", "nonmembers"):
        with (SD / f"{name}.csv").open(newline="") as handle:
            for row in list(csv.DictReader(handle))[:20]:
                copied = f"mixed/{name}_{Path(row['path']).name}"
                shutil.copy(SD / row["path"], root / copied)
                rows.append((copied, row["caption"]))
    with (root / "mixed.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "caption"), *rows])
    return write_policy(root / "lora.naa.yaml", f"""
        version: 1
        name: lora
        model: {{path: {SD / 'model'}, lora: {SD / 'lora'}, lora_scale: 0.3, reference: base}}
        data: {{members: {SD / 'lora_members.csv'}, nonmembers: ./mixed.csv, conditioning: caption}}
        attacks: {{loss: {{}}}}
        thresholds: {{auc: 0.8, tpr_at_1pct_fpr: null, decision: point}}
        runtime: {{device: cpu, batch_size: 20, seed: 0}}
        checks: {{shift_auc: null}}
        """)


SHAPES: dict[str, Callable[[Path], Path]] = {"pixel": _pixel, "reference": _reference, "tuned": _tuned, "latent": _latent, "lora": _lora}
JUNIT_STATUS = {"failure": "fail", "error": "error", "skipped": "skip"}


def _cli(policy: Path, out: Path) -> tuple[int, list[tuple[str, str, str]]]:
    code = main(["audit", str(policy), "--json", str(out), "--quiet", "--no-reports"])
    gates = json.loads(out.read_text())["gates"] if out.exists() else []
    return code, [(gate["attack"], gate["metric"], gate["status"]) for gate in gates]


def _pytest(pytester: pytest.Pytester, policy: Path) -> tuple[int, list[tuple[str, str, str]]]:
    result = pytester.runpytest_inprocess(str(policy), "-p", "no:cacheprovider", "--junitxml=junit.xml")
    rows = []
    for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"):
        properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
        outcome = next((JUNIT_STATUS[child.tag] for child in case if child.tag in JUNIT_STATUS), "pass")
        rows.append((str(properties.get("attack")), str(properties.get("metric")), outcome))
    return int(result.ret), rows


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_cli_and_pytest_gate_the_same_rows_with_the_same_verdicts(shape: str, pytester: pytest.Pytester) -> None:
    policy = SHAPES[shape](pytester.path / shape)
    listed = [(row.attack, row.metric) for row in gated_rows(load_policy(policy))]
    cli_code, cli_rows = _cli(policy, pytester.path / f"{shape}.json")
    pytest_code, pytest_rows = _pytest(pytester, policy)
    assert [row[:2] for row in cli_rows] == listed, cli_rows
    assert pytest_rows == cli_rows  # every row an item, with the CLI's verdict
    assert {0: 0, 1: 1, 2: 1}[cli_code] == pytest_code  # pytest exits 1 for failed and errored items alike
    if shape == "lora":  # the calibrated row fails where the raw one passes: the CLI says 1, and so must pytest
        assert cli_rows == [("loss", "auc", "pass"), ("loss/ref", "auc", "fail")] and cli_code == 1
    if shape == "reference":
        assert listed == [("loss", "auc"), ("loss/ref", "auc")]


def test_an_audit_whose_gates_differ_from_the_list_is_an_error_in_both_faces(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gate the audit did not decide, or one no face lists, gives no verdict: CLI exit 2, every pytest item errors."""
    import naa_guard.audit
    import naa_guard.verdict.gates

    policy_path = _pixel(pytester.path / "pixel")
    policy = load_policy(policy_path)
    real = naa_guard.verdict.gates.evaluate_gates

    def dropping(*args, **kwargs):  # type: ignore[no-untyped-def]
        return [gate for gate in real(*args, **kwargs) if gate.metric != "epsilon_lb"]

    def adding(*args, **kwargs):  # type: ignore[no-untyped-def]
        gates = real(*args, **kwargs)
        return [*gates, *(gate.__class__(**{**gate.__dict__, "attack": gate.attack + "/extra"}) for gate in gates[:1])]

    for fake, words in ((dropping, "no gate for naa epsilon_lb"), (adding, "a gate for naa/extra auc that the policy does not list")):
        monkeypatch.setattr(naa_guard.audit, "evaluate_gates", fake)
        assert main(["audit", str(policy_path), "--quiet", "--no-reports"]) == 2
        result = pytester.runpytest_inprocess(str(policy_path), "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        outcomes = result.parseoutcomes()
        assert outcomes.get("errors") == len(gated_rows(policy)) and "passed" not in outcomes, outcomes
        result.stdout.fnmatch_lines([f"*AuditInvalidError: *{words}*"])

    # a result that reaches a face without audit()'s own check (a distributed rank's, a stored one): each face checks it again
    monkeypatch.setattr(naa_guard.audit, "evaluate_gates", real)
    real_audit = naa_guard.audit.audit

    def unchecked(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_audit(*args, **kwargs)
        result.gates = [gate for gate in result.gates if gate.attack != "loss"]
        return result

    monkeypatch.setattr(naa_guard.audit, "audit", unchecked)
    assert main(["audit", str(policy_path), "--quiet", "--no-reports"]) == 2
    result = pytester.runpytest_inprocess(str(policy_path), "-p", "no:cacheprovider")
    assert result.parseoutcomes().get("errors") == len(gated_rows(policy)) and "passed" not in result.parseoutcomes()
    result.stdout.fnmatch_lines(["*AuditInvalidError: *no gate for loss auc*"])

    gates = real(policy, "naa", *_leakage())
    with pytest.raises(AuditInvalidError, match="no gate for loss auc"):
        match_gates(policy, gates)


def _leakage():  # type: ignore[no-untyped-def]
    import numpy as np

    from naa_guard.verdict.epsilon import epsilon_lower_bound
    from naa_guard.verdict.leakage import evaluate

    members, nonmembers = np.arange(24.0), np.arange(24.0) + 0.5
    return evaluate(members, nonmembers, n_bootstrap=50), epsilon_lower_bound(members, nonmembers, confidence=0.95, delta=1e-5)
