"""Tests of tuned attacks: candidate lists in policies, the calibration split, and the choice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import make_images, make_tiny_model, write_policy
from fakes import DictCache, NoQueryAttack, is_member
from pydantic import Field

from naa_guard.attacks import ATTACKS, AttackParams
from naa_guard.attacks.candidates import AttackCandidates, candidate_settings
from naa_guard.audit import audit
from naa_guard.errors import InsufficientSamplesError, PolicyError
from naa_guard.policy import load_policy, parse_policy, policy_schema
from naa_guard.reports.markdown import to_markdown
from naa_guard.reports.text import format_table
from naa_guard.samples import SampleSet
from naa_guard.tuning import split_for_tuning
from naa_guard.verdict.metrics import auc

BASE = {"version": 1, "model": {"path": "m"}, "data": {"members": "a", "nonmembers": "b"}}


def _parse(**sections: object):  # type: ignore[no-untyped-def]
    return parse_policy({**BASE, **sections}, Path("tuned.naa.yaml"))


# ----------------------------------------------------------------------------- policy side


def test_lists_become_the_cartesian_product_of_candidates() -> None:
    policy = _parse(attacks={"naa": {"t": [40, 60, 80], "noise": ["schedule", "scaled"], "stride": 10}, "loss": {"t": 100}})
    candidates = policy.attacks["naa"]
    assert isinstance(candidates, AttackCandidates)
    assert candidates.grid == {"t": (40, 60, 80), "noise": ("schedule", "scaled")}
    assert [(c.t, c.noise) for c in candidates.candidates] == [(t, n) for t in (40, 60, 80) for n in ("schedule", "scaled")]
    assert policy.attacks["loss"].t == 100  # a single setting stays plain parameters
    assert policy.tune.fraction == 0.2


def test_a_one_value_list_is_a_single_setting() -> None:
    assert _parse(attacks={"loss": {"t": [50]}}).attacks["loss"].t == 50


@pytest.mark.parametrize(
    ("attacks", "message"),
    [
        ({"naa": {"t": [40, 20], "stride": 10}}, r"attacks\.naa: t=20 is too small .* \(in candidate t=20\)"),
        ({"naa": {"t": [40, 80], "stride": [10, 20]}}, r"in candidate t=40, stride=20"),
        ({"loss": {"t": []}}, r"attacks\.loss\.t: an empty list of candidates"),
        ({"loss": {"t": [50, 50]}}, r"attacks\.loss\.t: the candidate list repeats a value"),
        ({"pia": {"t": [100, -5], "p": [2, 4]}}, r"attacks\.pia\.t: Input should be greater than or equal to 1 \(in candidate t=-5, p=2\)"),
        ({"naa": {"t": list(range(100, 200, 10)), "queries": list(range(2, 9))}}, r"10 t x 7 queries make 70 candidates; at most 64"),
    ],
)
def test_bad_candidates_name_their_key(attacks: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        _parse(attacks=attacks)


def test_bad_candidate_is_reported_once() -> None:
    with pytest.raises(PolicyError) as error:
        _parse(attacks={"pia": {"t": [100, -5], "p": [2, 3, 4]}})
    assert str(error.value).count("greater than or equal to 1") == 1


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_tune_fraction_must_be_strictly_between_0_and_1(fraction: float) -> None:
    with pytest.raises(PolicyError, match=r"tune\.fraction"):
        _parse(attacks={"loss": {"t": [50, 100]}}, tune={"fraction": fraction})


def test_schema_accepts_candidate_lists() -> None:
    t_schema = policy_schema()["properties"]["attacks"]["properties"]["naa"]["properties"]["t"]
    assert {"type": "array"}.items() <= t_schema["anyOf"][1].items()
    assert "tune" in policy_schema()["properties"]


def test_candidate_settings_keep_the_fixed_keys() -> None:
    settings, grid = candidate_settings({"t": [1, 2], "p": 4})
    assert settings == [{"t": 1, "p": 4}, {"t": 2, "p": 4}] and grid == {"t": (1, 2)}


# ----------------------------------------------------------------------------- the split


def _samples(n: int, role: str) -> SampleSet:
    return SampleSet.from_images(np.zeros((n, 1, 8, 8), np.float32), tuple(f"{role}{i}" for i in range(n)), np.arange(100, 100 + n), (None,) * n, Path(f"{role}.npz"), ())


def test_split_is_disjoint_seeded_and_sized() -> None:
    members, nonmembers = _samples(50, "members"), _samples(200, "nonmembers")
    split = split_for_tuning(members, nonmembers, 0.2, seed=3)
    for calibration, evaluation, whole in zip(split.calibration, split.evaluation, (members, nonmembers)):
        assert len(calibration) == round(0.2 * len(whole))
        assert not set(calibration.indices) & set(evaluation.indices)
        assert sorted([*calibration.indices, *evaluation.indices]) == list(whole.indices)
        assert [whole.names[i - 100] for i in evaluation.indices] == list(evaluation.names)
    again = split_for_tuning(members, nonmembers, 0.2, seed=3)
    other = split_for_tuning(members, nonmembers, 0.2, seed=4)
    assert list(again.calibration[0].indices) == list(split.calibration[0].indices)
    assert list(other.calibration[0].indices) != list(split.calibration[0].indices)


def test_split_refuses_a_calibration_part_too_small() -> None:
    with pytest.raises(InsufficientSamplesError, match=r"tune\.fraction 0\.2 splits the 30 members into 6 for calibration"):
        split_for_tuning(_samples(30, "members"), _samples(200, "nonmembers"), 0.2, seed=0)


# ----------------------------------------------------------------------------- the audit


class SpyParams(AttackParams):
    gain: float = Field(0.0, description="how far members are pushed (negative: reversed)")


class Spy(NoQueryAttack):
    """A fake attack: score = gain * is_member + seeded noise; records every sample it scores."""

    name = "spy"
    Params = SpyParams
    params: SpyParams
    seen: ClassVar[list[tuple[str, float, list[int]]]] = []

    def score(self, target, x0, sample_keys, seed, cond=None):  # type: ignore[no-untyped-def]
        keys = sample_keys.tolist()
        Spy.seen.append((self.name, self.params.gain, keys))
        return torch.tensor([spy_score(self.params.gain, key) for key in keys], dtype=torch.float64)


class FixedSpy(Spy):
    name = "fixed_spy"


def spy_score(gain: float, key: int) -> float:
    return gain * is_member(key) + float(np.random.default_rng(key).normal())


class ShapeOnlyTarget:
    """Enough of a target for attacks that never query the model."""

    sample_size, in_channels, device = 8, 1, torch.device("cpu")
    alphas_cumprod = torch.ones(1000)


@pytest.fixture
def spy_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a policy tuning the spy's gain over 60 + 80 images, with an untuned spy beside it."""
    monkeypatch.setitem(ATTACKS, "spy", Spy)
    monkeypatch.setitem(ATTACKS, "fixed_spy", FixedSpy)
    monkeypatch.setattr(Spy, "seen", [])
    make_tiny_model(tmp_path / "model")  # only read for its layout: the target is passed in
    make_images(tmp_path / "members.npz", 60, seed=1)
    make_images(tmp_path / "nonmembers.npz", 80, seed=2)
    return write_policy(
        tmp_path / "spy.naa.yaml",
        """
        version: 1
        model: {path: ./model}
        data: {members: ./members.npz, nonmembers: ./nonmembers.npz}
        attacks:
          spy: {gain: [0.0, 0.5, -3.0, 1.0]}
          fixed_spy: {gain: 0.5}
        tune: {fraction: 0.25}
        thresholds: {auc: 0.6, tpr_at_1pct_fpr: null, decision: point}
        runtime: {device: cpu, seed: 5}
        """,
    )


def _key_sets(keys: set[int]) -> tuple[set[int], set[int]]:
    """Return the member keys and the non-member keys among these noise keys."""
    members = {k for k in keys if is_member(k)}
    return members, keys - members


def test_tuning_never_evaluates_on_calibration_samples(spy_policy: Path) -> None:
    result = audit(load_policy(spy_policy), target=ShapeOnlyTarget(), progress=False)
    names = [name for name, _, _ in Spy.seen]
    assert names == ["spy"] * 10 + ["fixed_spy"] * 2  # 4 candidates + the chosen one, x (members, non-members)
    calibration_calls = [set(keys) for _, _, keys in Spy.seen[:8]]
    evaluation_calls = [set(keys) for _, _, keys in Spy.seen[8:]]
    calibration, evaluation = set().union(*calibration_calls), set().union(*evaluation_calls)
    assert not calibration & evaluation
    assert (len(_key_sets(calibration)[0]), len(_key_sets(calibration)[1])) == (15, 20)
    assert (len(_key_sets(evaluation)[0]), len(_key_sets(evaluation)[1])) == (45, 60)
    assert all(keys == calibration_calls[0] for keys in calibration_calls[0::2])  # same calibration members for all
    assert all(keys == calibration_calls[1] for keys in calibration_calls[1::2])
    # Every reported attack, the untuned one included, is measured on the evaluation part only.
    assert (result.n_members, result.n_nonmembers) == (45, 60)
    for name in ("spy", "fixed_spy"):
        assert (result.attacks[name].leakage.n_members, result.attacks[name].leakage.n_nonmembers) == (45, 60)
    gain = result.attacks["spy"].params["gain"]
    expected = sorted(spy_score(gain, key) for key in _key_sets(evaluation)[0])
    np.testing.assert_allclose(sorted(result.attacks["spy"].member_scores), expected)


def test_tuning_chooses_the_strongest_candidate_on_calibration(spy_policy: Path) -> None:
    result = audit(load_policy(spy_policy), target=ShapeOnlyTarget(), progress=False)
    tuning = result.attacks["spy"].tuning
    assert tuning is not None and result.attacks["fixed_spy"].tuning is None
    # Recompute every candidate's calibration AUC from the scores the spy actually returned.
    for candidate, (member_call, nonmember_call) in zip(tuning.candidates, zip(Spy.seen[0:8:2], Spy.seen[1:8:2])):
        gain = member_call[1]
        assert candidate.params == {"gain": gain}
        recomputed = auc([spy_score(gain, k) for k in member_call[2]], [spy_score(gain, k) for k in nonmember_call[2]])
        assert candidate.auc == pytest.approx(recomputed)
    leak = [candidate.leak_auc for candidate in tuning.candidates]
    assert tuning.chosen == int(np.argmax(leak))
    assert tuning.candidates[tuning.chosen].params == {"gain": -3.0}  # the reversed one leaks most
    assert tuning.candidates[tuning.chosen].direction == "members_lower"
    assert result.attacks["spy"].params["gain"] == -3.0
    assert (tuning.n_members, tuning.n_nonmembers, tuning.fraction) == (15, 20, 0.25)
    report = json.loads(json.dumps(result.to_dict()))["attacks"]["spy"]["tuning"]
    assert report["chosen"] == {"gain": -3.0}
    assert [c["chosen"] for c in report["candidates"]] == [False, False, True, False]


def test_tuned_real_attack_end_to_end_with_cache(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")
    make_images(tmp_path / "members.npz", 40, seed=1)
    make_images(tmp_path / "nonmembers.npz", 40, seed=2)
    policy = write_policy(
        tmp_path / "tuned.naa.yaml",
        """
        version: 1
        model: {path: ./model}
        data: {members: ./members.npz, nonmembers: ./nonmembers.npz}
        attacks: {loss: {t: [10, 100]}}
        tune: {fraction: 0.5}
        thresholds: {auc: 0.99, tpr_at_1pct_fpr: null}
        runtime: {device: cpu, batch_size: 8}
        """,
    )
    cache = DictCache()
    first = audit(load_policy(policy), progress=False, score_cache=cache)
    assert len(cache.entries) == 3  # two candidates on calibration, the chosen one on evaluation
    second = audit(load_policy(policy), progress=False, score_cache=cache)
    assert not second.model_loaded
    np.testing.assert_array_equal(second.attacks["loss"].member_scores, first.attacks["loss"].member_scores)
    assert len(first.attacks["loss"].member_scores) == 20

    table, markdown = format_table(first), to_markdown(first)
    assert "tuned on a 50% calibration split (20 members / 20 non-members" in table
    assert table.count("<- chosen") == 1 and "t=10: leak AUC" in table and "t=100: leak AUC" in table
    assert "- `t=10`: leak AUC" in markdown and markdown.count("<- chosen") == 1
