"""Degenerate scores through both faces: an attack whose scores are all alike is an error row of the
audit (CLI exit 2, a pytest item error), never an AUC 0.500 PASS; attack parameters outside the range
where the attack is defined are policy errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_tiny_setup

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy
from naa_guard.sweep import format_sweep, sweep

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("one_thread")

THRESHOLDS = "{auc: 0.8, tpr_at_1pct_fpr: null, decision: point}"


def _silent_model(policy: Path) -> Path:
    """Zero the tiny model's output layer: every noise prediction is 0, so every SimA score is the same 0."""
    from diffusers import UNet2DModel

    folder = policy.parent / "model"
    unet = UNet2DModel.from_pretrained(folder / "unet")
    for tensor in (unet.conv_out.weight, unet.conv_out.bias):
        tensor.data.zero_()
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return policy


@pytest.fixture(scope="module")
def silent_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("silent")
    return _silent_model(make_tiny_setup(root, attacks="{sima: {t: 50}, loss: {t: 100}}", thresholds=THRESHOLDS, members=30, nonmembers=30))


def test_all_alike_scores_are_an_error_row_naming_the_attack_its_setting_and_side(silent_policy: Path) -> None:
    result = audit(load_policy(silent_policy), progress=False)
    sima = [gate for gate in result.gates if gate.attack == "sima"]
    assert sima and all(gate.status == "error" for gate in sima)  # was: AUC 0.500 PASS
    message = sima[0].message
    assert "sima (t=50, p=4.0, ts=None)" in message and "member scores" in message and "1 distinct value" in message
    assert "attacks.sima" in message
    assert result.errored and not result.passed
    assert result.attacks["sima"].to_dict()["metrics"]["degenerate"]
    loss = [gate for gate in result.gates if gate.attack == "loss"]
    assert loss and all(gate.status == "pass" for gate in loss)  # the other row is gated as usual


def test_the_cli_exits_2_on_a_degenerate_row(silent_policy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(silent_policy), "--quiet"]) == 2


def test_the_pytest_item_of_a_degenerate_row_errors(silent_policy: Path, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nnaa_policy_patterns = *.naa.yaml\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--naa-policy", str(silent_policy))
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*sima AUC cannot be decided (degenerate scores)*"])


def test_a_sweep_marks_degenerate_settings_and_never_calls_them_the_strongest(silent_policy: Path) -> None:
    result = sweep(load_policy(silent_policy), "sima", {"t": [50, 100]}, progress=False)
    assert all(row.degenerate is not None for row in result.rows)
    table = format_sweep(result)
    assert "<- highest leak AUC" not in table and table.count("<- degenerate scores: no evidence") == 2


def test_an_exponent_below_one_is_a_policy_error_naming_key_value_and_range(tmp_path: Path) -> None:
    for attacks, key in (("{sima: {p: 1.0e-30}}", "attacks.sima.p"), ("{pia: {p: 0.5}}", "attacks.pia.p"), ("{sima: {p: [2, 0.25]}}", "attacks.sima.p")):
        policy = make_tiny_setup(tmp_path / key.replace(".", "_") / attacks[2:6], attacks=attacks)
        with pytest.raises(PolicyError, match=rf"{key}: Input should be greater than or equal to 1"):
            load_policy(policy)
    with pytest.raises(PolicyError, match=r"attacks.sima.p: Input should be a finite number \(found: nan\)"):
        load_policy(make_tiny_setup(tmp_path / "nan", attacks="{sima: {p: .nan}}"))
