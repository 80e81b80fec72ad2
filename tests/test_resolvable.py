"""Tests of naa_guard/resolvable.py and the upper_ci decision (issue 20; issue 14 item 4; issue 19 item 1).

A gate must be able to go either way at the counts the audit evaluates: a model that does not leak
must be able to pass it (upper_ci), a TPR gate needs 10 expected false positives, an epsilon gate
must be able to fail. Each is decided from the listings, before any model or image loads.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_images, make_tiny_model, write_policy
from fakes import NoQueryAttack, is_member
from pydantic import Field

from naa_guard.attacks import ATTACKS, AttackParams
from naa_guard.audit import audit
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy
from naa_guard.verdict import leakage, metrics, resolvable
from naa_guard.verdict.epsilon import epsilon_lower_bound

pytest_plugins = ["pytester"]


class ShiftParams(AttackParams):
    gain: float = Field(0.0, description="how far members' scores are shifted up (0: a model that does not leak)")


class Shift(NoQueryAttack):
    """A fake attack: score = gain * is_member + seeded standard normal noise; never queries the model."""

    name = "shift"
    Params = ShiftParams
    params: ShiftParams
    scored: ClassVar[list[int]] = []

    def score(self, target, x0, sample_keys, seed, cond=None):  # type: ignore[no-untyped-def]
        keys = sample_keys.tolist()
        Shift.scored.extend(keys)
        members = [is_member(key) for key in keys]
        return torch.tensor([self.params.gain * m + float(np.random.default_rng([7, key]).normal()) for m, key in zip(members, keys)], dtype=torch.float64)


class ShapeOnlyTarget:
    sample_size, in_channels, device = 8, 1, torch.device("cpu")
    alphas_cumprod = torch.ones(1000)


@pytest.fixture
def shift_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ATTACKS, "shift", Shift)
    monkeypatch.setattr(Shift, "scored", [])


def shift_policy(root: Path, per_side: int, *, gain: float = 0.0, thresholds: str = "{auc: 0.60, tpr_at_1pct_fpr: null}") -> Path:
    """Write a tiny model (layout only), two random sets of ``per_side`` images and a policy with the shift attack."""
    make_tiny_model(root / "model")
    make_images(root / "members.npz", per_side, seed=1)
    make_images(root / "nonmembers.npz", per_side, seed=2)
    return write_policy(
        root / "shift.naa.yaml",
        f"""
        version: 1
        model: {{path: ./model}}
        data: {{members: ./members.npz, nonmembers: ./nonmembers.npz}}
        attacks: {{shift: {{gain: {gain}}}}}
        thresholds: {thresholds}
        checks: {{shift_auc: null}}
        runtime: {{device: cpu, seed: 0}}
        """,
    )


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spies: preparing the audit (model, images), loading a model or decoding an image fails the test."""
    from naa_guard import audit as audit_module
    from naa_guard.samples import arrays
    from naa_guard.scoring import models

    def refuse(what: str):  # type: ignore[no-untyped-def]
        def spy(*args: object, **kwargs: object) -> None:
            pytest.fail(f"{what} although the gate is unresolvable from the counts")

        return spy

    monkeypatch.setattr(audit_module, "prepare_audit", refuse("the audit was prepared"))
    monkeypatch.setattr(models, "load_target", refuse("the model was loaded"))
    monkeypatch.setattr(arrays, "_decode_array_rows", refuse("an image was decoded"))


# ----------------------------------------------------------------------------- the arithmetic


def test_constants_agree_with_the_metrics_module() -> None:
    assert resolvable.FPR_LEVELS == metrics.FPR_LEVELS
    assert resolvable.MIN_FALSE_POSITIVES == metrics.MIN_FALSE_POSITIVES


def test_null_auc_upper_bound_matches_simulations_with_the_metrics_code() -> None:
    """The analytic bound against the mean upper bound of 40 null models evaluated by naa_guard.verdict.metrics."""
    for per_side in (20, 40, 100):
        rng = np.random.default_rng(per_side)
        uppers = [leakage.evaluate(rng.normal(size=per_side), rng.normal(size=per_side), n_bootstrap=300, seed=i).metrics["auc"].ci[1] for i in range(40)]
        # The mean of 40 upper bounds has a standard error of about 0.006 at 20 per side.
        assert abs(np.mean(uppers) - resolvable.null_auc_upper(per_side, per_side, 0.95)) < 0.02, per_side
    # The table (simulated): 0.749, 0.687, 0.609, 0.576 at 20, 40, 100, 200 per side.
    figures = [resolvable.null_auc_upper(n, n, 0.95) for n in (20, 40, 100, 200)]
    assert np.allclose(figures, [0.749, 0.687, 0.609, 0.576], atol=0.01), figures


def test_perfect_separation_epsilon_is_what_the_epsilon_code_gives_separated_scores() -> None:
    for n_members, n_nonmembers in ((100, 100), (30, 500), (1000, 200)):
        separated = epsilon_lower_bound(np.arange(n_members) + n_nonmembers, np.arange(n_nonmembers), confidence=0.95, delta=1e-5)
        assert resolvable.perfect_separation_epsilon(n_members, n_nonmembers, 0.95, 1e-5) == pytest.approx(separated.value, rel=1e-9)
    assert resolvable.perfect_separation_epsilon(100, 100, 0.95, 1e-5) == pytest.approx(2.29, abs=0.005)  # the figure


def test_needed_per_side_is_the_smallest_count_that_resolves() -> None:
    needed = resolvable.needed_per_side(lambda n: resolvable.null_auc_upper(n, n, 0.95) <= 0.60, start=20)
    assert needed is not None
    assert resolvable.null_auc_upper(needed, needed, 0.95) <= 0.60 < resolvable.null_auc_upper(needed - 1, needed - 1, 0.95)
    assert resolvable.needed_per_side(lambda n: resolvable.null_auc_upper(n, n, 0.95) <= 0.5) is None  # no count certifies 0.5


# ----------------------------------------------------------------------------- issue 20: upper_ci is the default


def test_null_model_at_40_per_side_with_limit_060_is_unresolvable_before_loading(tmp_path: Path, shift_attack: None, nothing_loads: None) -> None:
    policy = load_policy(shift_policy(tmp_path, 40))
    assert policy.thresholds.decision == "upper_ci"  # the default
    with pytest.raises(PolicyError) as error:
        audit(policy, target=ShapeOnlyTarget(), progress=False)
    message = str(error.value)
    assert "thresholds.auc: the AUC gate (limit 0.6) cannot be resolved with 40 members / 40 non-members" in message
    needed = resolvable.needed_per_side(lambda n: resolvable.null_auc_upper(n, n, 0.95) <= 0.60, start=20)
    assert f"Needed: at least {needed} members and {needed} non-members; present: 40 members / 40 non-members" in message
    assert "thresholds.unresolvable: warn" in message and "thresholds.auc: null" in message
    assert Shift.scored == []


def test_null_model_at_400_per_side_passes(tmp_path: Path, shift_attack: None) -> None:
    result = audit(load_policy(shift_policy(tmp_path, 400)), target=ShapeOnlyTarget(), progress=False)
    (gate,) = result.gates
    assert gate.decision == "upper_ci" and gate.status == "pass", gate.message
    assert gate.ci[1] <= 0.60
    assert "(upper 95% CI bound" in gate.message


def test_under_warn_an_unresolvable_gate_is_decided_with_a_warning(tmp_path: Path, shift_attack: None) -> None:
    policy = load_policy(shift_policy(tmp_path, 40, thresholds="{auc: 0.60, tpr_at_1pct_fpr: null, unresolvable: warn}"))
    result = audit(policy, target=ShapeOnlyTarget(), progress=False)
    assert any("cannot be resolved with 40 members / 40 non-members" in w and "gated anyway" in w for w in result.warnings), result.warnings
    assert result.gates[0].status != "pass"  # a null model's interval at 40 per side reaches past 0.60


def test_an_estimate_within_the_limit_whose_interval_is_not_fails_by_default_and_passes_under_point(tmp_path: Path, shift_attack: None) -> None:
    path = shift_policy(tmp_path, 200, gain=0.3)
    result = audit(load_policy(path), target=ShapeOnlyTarget(), progress=False)
    (gate,) = result.gates
    assert gate.value <= 0.60 < gate.ci[1], gate  # the case this test is about
    assert gate.status == "fail"
    assert "NOT CERTIFIED at 95%" in gate.message and f"its interval reaches {gate.ci[1]:.3f}" in gate.message
    factor = ((gate.ci[1] - gate.value) / (0.60 - gate.value)) ** 2
    assert f"about {math.ceil(factor * 200)} members and {math.ceil(factor * 200)} non-members" in gate.message

    path.write_text(path.read_text().replace("tpr_at_1pct_fpr: null}", "tpr_at_1pct_fpr: null, decision: point}"))
    (point,) = audit(load_policy(path), target=ShapeOnlyTarget(), progress=False).gates
    assert point.status == "pass" and point.value == gate.value
    assert f"(point estimate; the upper 95% CI bound is {gate.ci[1]:.3f}, above the limit: not certified at this confidence)" in point.message


def test_cli_refuses_an_unresolvable_gate_without_importing_torch(tmp_path: Path) -> None:
    path = shift_policy(tmp_path, 40, thresholds="{auc: 0.60, tpr_at_1pct_fpr: 0.05}")
    path.write_text(path.read_text().replace("{shift: {gain: 0.0}}", "{naa: {}}"))
    probe = (
        "import sys; from naa_guard.cli import main; code = main(['audit', sys.argv[1]]); "
        "print('exit', code, 'torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300)
    assert "exit 2 False False" in run.stdout, run.stdout + run.stderr
    assert "thresholds.auc: the AUC gate (limit 0.6) cannot be resolved with 40 members / 40 non-members" in run.stderr
    assert "thresholds.tpr_at_1pct_fpr: the TPR@1%FPR gate (limit 0.05) cannot be resolved" in run.stderr
    assert "present: 40 members / 40 non-members" in run.stderr and "fewer than 10" in run.stderr


# ----------------------------------------------------------------------------- issue 14 item 4: the epsilon gate


def test_an_epsilon_limit_perfect_separation_cannot_reach_is_unresolvable_before_loading(tmp_path: Path, shift_attack: None, nothing_loads: None) -> None:
    policy = load_policy(shift_policy(tmp_path, 100, thresholds="{auc: null, tpr_at_1pct_fpr: null, epsilon_lb: 3.0}"))
    with pytest.raises(PolicyError, match=r"thresholds\.epsilon_lb: .*perfectly separated scores give an epsilon lower bound of only 2\.286 .*can never fail") as error:
        audit(policy, target=ShapeOnlyTarget(), progress=False)
    needed = resolvable.needed_per_side(lambda n: resolvable.perfect_separation_epsilon(n, n, 0.95, 1e-5) > 3.0, start=20)
    assert f"Needed: at least {needed} members and {needed} non-members; present: 100 members / 100 non-members" in str(error.value)


def test_perfectly_separated_scores_pass_an_epsilon_limit_above_their_reach_under_warn_only(tmp_path: Path, shift_attack: None) -> None:
    policy = load_policy(shift_policy(tmp_path, 100, gain=50.0, thresholds="{auc: null, tpr_at_1pct_fpr: null, epsilon_lb: 3.0, unresolvable: warn}"))
    result = audit(policy, target=ShapeOnlyTarget(), progress=False)
    assert result.attacks["shift"].epsilon.value == pytest.approx(2.286, abs=1e-3)  # perfect separation
    assert any("can never fail" in warning for warning in result.warnings)


def test_delta_must_be_below_one_over_the_members(tmp_path: Path, shift_attack: None, nothing_loads: None) -> None:
    policy = load_policy(shift_policy(tmp_path, 100, thresholds="{auc: null, tpr_at_1pct_fpr: null, epsilon_lb: 1.0, delta: 0.5}"))
    with pytest.raises(PolicyError, match=r"thresholds\.delta 0\.5 is not below 1 / 100 .*Fix: set thresholds\.delta below 0\.01"):
        audit(policy, target=ShapeOnlyTarget(), progress=False)


# ----------------------------------------------------------------------------- issue 19 item 1: pytest collection


def test_pytest_reports_an_unresolvable_gate_as_a_collection_error_of_its_item(pytester: pytest.Pytester) -> None:
    path = shift_policy(pytester.path, 400, thresholds="{auc: 0.60, tpr_at_1pct_fpr: 0.05}")
    path.write_text(path.read_text().replace("{shift: {gain: 0.0}}", "{naa: {}}"))
    result = pytester.runpytest("--collect-only", "-q", "--naa-quick", "40", "--continue-on-collection-errors")
    result.stdout.fnmatch_lines([
        "*ERROR collecting shift.naa.yaml*",
        "PolicyError: *shift.naa.yaml: thresholds.auc: the AUC gate (limit 0.6) cannot be resolved with 40 members / 40 non-members as evaluated after limit 40: *",
        "Fix (any one): evaluate more samples (raise --limit / --naa-quick (now 40) if the sets hold more, or add images); raise thresholds.auc to 0.68 *; "
        "set thresholds.decision: point *; set thresholds.auc: null to drop the gate; set thresholds.unresolvable: warn to gate on it anyway *",
        "*ERROR collecting shift.naa.yaml*",
        "PolicyError: *thresholds.tpr_at_1pct_fpr: the TPR@1%FPR gate (limit 0.05) cannot be resolved with 40 members / 40 non-members*Needed: at least 1000 members and 1000 non-members; present: 40 members / 40 non-members.",
        "*short test summary info*",
        "ERROR shift.naa.yaml::naa::auc",
        "ERROR shift.naa.yaml::naa::tpr@1%fpr",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    # Without --naa-quick the 400 per side resolve the AUC gate; the TPR gate still needs 1000 non-members.
    result = pytester.runpytest("--collect-only", "-q", "--continue-on-collection-errors")
    result.stdout.fnmatch_lines(["shift.naa.yaml::naa::auc", "*short test summary info*", "ERROR shift.naa.yaml::naa::tpr@1%fpr"])
    assert "ERROR shift.naa.yaml::naa::auc" not in result.stdout.str()
    # thresholds.unresolvable: warn collects both, to be gated anyway.
    path.write_text(path.read_text().replace("tpr_at_1pct_fpr: 0.05}", "tpr_at_1pct_fpr: 0.05, unresolvable: warn}"))
    pytester.runpytest("--collect-only", "-q").stdout.fnmatch_lines(["shift.naa.yaml::naa::auc", "shift.naa.yaml::naa::tpr@1%fpr"])
