"""Tuning never crosses rows (naa_guard/tuning.py, naa_guard/audit.py): the raw row is tuned on raw
scores and ``name/ref`` on calibrated ones, each with its own candidate table; a tie on the
calibration split is settled against the model (the candidate leaking most on the evaluation part),
never by list order."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import OVERFIT

from naa_guard.attacks import ATTACKS
from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.attacks.loss import LossParams
from naa_guard.audit import audit
from naa_guard.policy import load_policy
from naa_guard.reports.text import format_table
from naa_guard.tuning import CalibrationSplit, tied_at_best, tune_attack

pytestmark = pytest.mark.usefixtures("one_thread")


def _scores(strength: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) + strength, rng.normal(size=n)


def test_a_tie_on_calibration_goes_to_the_candidate_leaking_most_on_evaluation_not_the_first() -> None:
    calibration, evaluation = (list(range(20)), list(range(20))), (list(range(80)), list(range(80)))
    split = CalibrationSplit(0.2, calibration, evaluation)  # type: ignore[arg-type]  # only len() and identity are used
    candidates = AttackCandidates({"t": (100, 200, 300)}, tuple(LossParams(t=t) for t in (100, 200, 300)))
    # on calibration every candidate scores all alike (a tie at 0.5); on evaluation t=300 leaks, t=100 and t=200 do not
    evaluation_strength = {100: 0.0, 200: 0.2, 300: 3.0}

    def score(attack, members, nonmembers, label):  # type: ignore[no-untyped-def]
        if members is calibration[0]:
            return np.zeros(len(members)), np.zeros(len(nonmembers)), False
        return (*_scores(evaluation_strength[attack.params.t], len(members), attack.params.t), False)

    params, tuning = tune_attack(ATTACKS["loss"], candidates, split, score)
    assert params.t == 300  # was: t=100, the first listed
    assert tuning.tied == (0, 1, 2) and tuning.tie_evaluation[2] > 0.9 and tuning.chosen == 2
    assert tuning.to_dict()["tie"]["candidates"][2]["params"] == {"t": 300}


def test_only_exact_ties_are_ties() -> None:
    assert tied_at_best([0.5, 0.5 + 1e-15, 0.6], 10, 10) == [2]
    assert tied_at_best([0.6, 0.6 - 1e-15, 0.6 - 1 / 200], 10, 10) == [0, 1]


@pytest.fixture(scope="module")
def copied_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy over the overfit digits whose reference is a copy of the model, SimA tuned over t in [999, 50]."""
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(OVERFIT / "model", root / "copy")
    policy = root / "copy.naa.yaml"
    policy.write_text(textwrap.dedent(f"""\
        version: 1
        model: {{path: {OVERFIT / "model"}, reference: {root / "copy"}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}, limit: 60}}
        attacks: {{sima: {{t: [999, 50]}}}}
        thresholds: {{auc: 0.8, tpr_at_1pct_fpr: null}}
        runtime: {{device: cpu, batch_size: 128, seed: 0}}
        """), encoding="utf-8")  # fmt: skip
    return policy


def test_a_reference_copy_of_the_model_certifies_nothing(copied_reference: Path) -> None:
    result = audit(load_policy(copied_reference), progress=False)
    assert not result.passed  # was: a certified PASS at t=999, chosen on the all-zero calibrated scores
    raw, calibrated = result.attacks["sima"], result.attacks["sima/ref"]
    # the raw row is tuned on raw scores: t=50, where the overfit model leaks
    assert raw.params["t"] == 50 and raw.tuning is not None and raw.tuning.scores == "raw"
    assert raw.tuning.candidates[raw.tuning.chosen].leak_auc > 0.9
    assert [gate.status for gate in result.gates if gate.attack == "sima"] == ["fail"]
    # the calibrated row is tuned on calibrated scores (all zero: every candidate ties) and shows its own table
    assert calibrated.tuning is not None and calibrated.tuning.scores == "calibrated"
    assert [candidate.leak_auc for candidate in calibrated.tuning.candidates] == [0.5, 0.5]
    assert len(calibrated.tuning.tied) == 2
    # its scores are all zero: degenerate, an error, never AUC 0.500 PASS
    assert [gate.status for gate in result.gates if gate.attack == "sima/ref"] == ["error"]
    table = format_table(result)
    assert "never gated) on raw scores" in table and "never gated) on calibrated scores" in table
