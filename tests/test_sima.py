"""SimA (naa_guard/attacks/sima.py): its score against the formula written out by hand, its
parameters (t, p, ts), its query count, and the paths every attack must take: policy validation,
batch-size invariance, pixel and latent audits, tuning, sweeps and the score cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, OVERFIT, make_tiny_model, make_tiny_setup, write_policy
from tolerance import assert_scores_close
from fakes import DictCache, KnownImagesTarget

from naa_guard.attacks import ATTACKS
from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.attacks.common import sample_keys
from naa_guard.attacks.sima import SimA, SimAParams
from naa_guard.audit import audit
from naa_guard.errors import PolicyError, TargetError
from naa_guard.policy import load_policy
from naa_guard.samples import SampleSet, load_samples
from naa_guard.scoring.keys import PACKAGE_ROOT, implementation_digest, left_out_of_the_key
from naa_guard.scoring.runner import score_samples
from naa_guard.sweep import sweep
from naa_guard.targets import load_target, read_model_info

N = 16  # one whole padded model batch: the target's call and the direct call below run the same kernels
SEED = 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Return (target, x0, keys): a tiny random pixel UNet and sixteen random 8x8 images."""
    folder = make_tiny_model(tmp_path_factory.mktemp("sima") / "model")
    target = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    x0 = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target, x0, sample_keys("members", range(N))


def eps_by_hand(target, x0: torch.Tensor, t: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Return the UNet's noise prediction at the clean input, called directly, as float64 numpy."""
    with torch.inference_mode():
        out = target.unet(x0, torch.full((len(x0),), t, dtype=torch.long)).sample
    return out.double().numpy().reshape(len(x0), -1)


# Float64 sums of 64 terms in another order (numpy's pairwise vs torch's): relative error < 1e-14.
RTOL = 1e-12


@pytest.mark.parametrize(("t", "p"), [(50, 4.0), (100, 2.0), (0, 3.0)])
def test_score_is_minus_the_sum_of_the_prediction_to_the_p(tiny, t: int, p: float) -> None:  # type: ignore[no-untyped-def]
    target, x0, keys = tiny
    expected = -np.sum(np.abs(eps_by_hand(target, x0, t)) ** p, axis=1)
    params = SimAParams(t=t, p=p) if (t, p) != (50, 4.0) else SimAParams()  # the defaults are t=50, p=4
    scores = SimA(params).score(target, x0, keys, SEED)
    assert scores.dtype == torch.float64
    np.testing.assert_allclose(scores.numpy(), expected, rtol=RTOL, atol=0)


def test_several_timesteps_average_the_log_of_each_mean(tiny) -> None:  # type: ignore[no-untyped-def]
    target, x0, keys = tiny
    per_t = [np.mean(np.abs(eps_by_hand(target, x0, t)) ** 4, axis=1) for t in (20, 100, 300)]
    expected = -np.mean(np.log(per_t), axis=0)
    scores = SimA(SimAParams(ts=(20, 100, 300))).score(target, x0, keys, SEED)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=RTOL, atol=0)


def test_one_listed_timestep_ranks_samples_as_that_timestep_alone(tiny) -> None:  # type: ignore[no-untyped-def]
    target, x0, keys = tiny
    alone = SimA(SimAParams(t=80)).score(target, x0, keys, SEED)
    listed = SimA(SimAParams(ts=(80,))).score(target, x0, keys, SEED)
    assert not torch.equal(alone, listed)  # another scale (log of the mean) ...
    assert torch.equal(alone.argsort(), listed.argsort())  # ... the same order


def test_the_score_needs_no_noise_and_no_seed(tiny) -> None:  # type: ignore[no-untyped-def]
    target, x0, keys = tiny
    attack = SimA(SimAParams(ts=(20, 100)))
    assert torch.equal(attack.score(target, x0, keys, 0), attack.score(target, x0, sample_keys("nonmembers", range(N)), 99))


@pytest.mark.parametrize(("params", "queries", "max_t"), [(SimAParams(), 1, 50), (SimAParams(t=7), 1, 7), (SimAParams(ts=(100, 20, 50)), 3, 100)])
def test_one_query_per_timestep(tiny, params: SimAParams, queries: int, max_t: int) -> None:  # type: ignore[no-untyped-def]
    target, x0, keys = tiny
    attack = SimA(params)
    calls, rows = target.forward_calls, target.sample_queries
    attack.score(target, x0, keys, SEED)
    assert (attack.queries_per_sample, attack.max_timestep) == (queries, max_t)
    assert (target.forward_calls - calls, target.sample_queries - rows) == (queries, queries * N)


@pytest.mark.parametrize("params", [SimAParams(), SimAParams(ts=(20, 100), p=2.0)])
def test_scores_agree_across_batch_sizes(tiny, params: SimAParams) -> None:  # type: ignore[no-untyped-def]
    target, x0, _ = tiny
    samples = SampleSet.from_images(x0.numpy(), tuple(f"s{i}" for i in range(N)), np.arange(N), (None,) * N, Path("x.npz"), ())
    scores = [score_samples(SimA(params), target, samples, "members", batch_size=size, seed=SEED) for size in (16, 5, 3)]
    assert_scores_close(scores[1], scores[0])  # other batch shapes: float32 reordering only (tests/tolerance.py)
    assert_scores_close(scores[2], scores[0])


# ----------------------------------------------------------------------------- parameters in a policy


def _policy(tmp_path: Path, block: str, extra: str = "") -> Path:
    return write_policy(
        tmp_path / "p.naa.yaml",
        f"version: 1\nmodel: {{path: ./model}}\ndata: {{members: ./m.npz, nonmembers: ./n.npz}}\nattacks:\n  sima: {block}\n{extra}",
    )


def test_a_list_of_timesteps_is_one_setting_and_a_list_of_lists_lists_candidates(tmp_path: Path) -> None:
    assert load_policy(_policy(tmp_path, "{}")).attacks["sima"] == SimAParams(t=50, p=4.0)
    assert load_policy(_policy(tmp_path, "{ts: [20, 50, 100]}")).attacks["sima"] == SimAParams(ts=(20, 50, 100))
    candidates = load_policy(_policy(tmp_path, "{ts: [[20, 50], [100]]}")).attacks["sima"]
    assert isinstance(candidates, AttackCandidates)
    assert [c.ts for c in candidates.candidates] == [(20, 50), (100,)]
    tuned_t = load_policy(_policy(tmp_path, "{t: [20, 50, 100], p: 2}")).attacks["sima"]
    assert isinstance(tuned_t, AttackCandidates) and [(c.t, c.p) for c in tuned_t.candidates] == [(20, 2.0), (50, 2.0), (100, 2.0)]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{t: 50, ts: [20, 100]}", "attacks.sima: t=50 and ts=[20, 100] are both given"),
        ("{t: null}", "attacks.sima: t is null and no ts is given"),
        ("{ts: [20, 20]}", "repeats a timestep"),
        ("{ts: []}", "attacks.sima.ts: Tuple should have at least 1 item"),
        ("{ts: [20, '50']}", "attacks.sima.ts.1: Input should be a valid integer"),
        ("{ts: [20, -1]}", "attacks.sima.ts.1: Input should be greater than or equal to 0"),
        ("{p: 0}", "attacks.sima.p"),
        ("{t: [10, 50], ts: [20]}", "both given"),
    ],
)
def test_bad_parameters_name_their_key(tmp_path: Path, block: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        load_policy(_policy(tmp_path, block))


def test_a_timestep_past_the_schedule_is_refused_before_scoring(tmp_path: Path) -> None:
    policy = make_tiny_setup(tmp_path, attacks="{sima: {ts: [50, 1000]}}")
    with pytest.raises(TargetError, match=r"attack sima queries timestep 1000, but the model's schedule has only 1000"):
        audit(load_policy(policy), progress=False)


def test_schema_lists_sima_with_its_defaults() -> None:
    from naa_guard.policy import policy_schema

    sima = policy_schema()["properties"]["attacks"]["properties"]["sima"]["properties"]
    assert set(sima) == {"t", "p", "ts"}
    assert sima["t"]["anyOf"][0]["default"] == 50 and sima["p"]["anyOf"][0]["default"] == 4.0


# ----------------------------------------------------------------------------- audits


def test_pixel_audit_fails_a_memorising_model_and_caches_sima_scores(tmp_path: Path) -> None:
    policy_path = make_tiny_setup(tmp_path, attacks="{sima: {}, loss: {}}", thresholds="{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}", batch_size=16)
    policy = load_policy(policy_path)
    images = {role: load_samples(getattr(policy.data, role), size=8, channels=1, role=role).images for role in ("members", "nonmembers")}
    target = KnownImagesTarget(exact=images["members"], perturbed=images["nonmembers"])
    result = audit(policy, target=target, progress=False)
    sima = result.attacks["sima"]
    assert sima.leakage.auc == 1.0 and sima.queries_per_sample == 1
    assert any(gate.attack == "sima" and gate.status == "fail" for gate in result.gates)
    assert result.worst_case()["auc"]["attack"] in {"sima", "loss"}

    cache = DictCache()
    first = audit(policy, progress=False, score_cache=cache)
    again = audit(policy, progress=False, score_cache=cache)
    assert again.attacks["sima"].cached and np.array_equal(again.attacks["sima"].member_scores, first.attacks["sima"].member_scores)
    other_p = policy.model_copy(update={"attacks": {"sima": SimAParams(p=2.0)}})
    assert not audit(other_p, progress=False, score_cache=cache).attacks["sima"].cached  # p is in the key


def test_the_cache_key_covers_the_sima_source() -> None:
    """The key hashes the package's scoring path, sima.py included (editing it changes the key: tests/test_scorecache.py)."""
    assert (PACKAGE_ROOT / "attacks" / "sima.py").is_file() and not left_out_of_the_key("attacks/sima.py")
    assert implementation_digest(SimA()) == implementation_digest(SimA(SimAParams(ts=(20, 50))))


def test_tuning_chooses_t_on_the_calibration_split_of_the_overfit_model(tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "tuned.naa.yaml",
        f"""
        version: 1
        model: {{path: {OVERFIT / "model"}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}}}
        attacks: {{sima: {{t: [5, 50, 400]}}}}
        tune: {{fraction: 0.25}}
        thresholds: {{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}}
        runtime: {{device: cpu, batch_size: 128, seed: 0}}
        """,
    )
    result = audit(load_policy(policy), progress=False)
    sima = result.attacks["sima"]
    tuning = sima.tuning
    assert tuning is not None and [c.params for c in tuning.candidates] == [{"t": 5}, {"t": 50}, {"t": 400}]
    best = max(range(3), key=lambda i: (tuning.candidates[i].leak_auc, -i))
    assert tuning.chosen == best and sima.params["t"] == tuning.candidates[best].params["t"]
    assert (result.n_members, result.n_nonmembers) == (75, 225)  # gated on the evaluation part only
    assert sima.leakage.leak_auc > 0.9  # the overfit fixture's members (measured: 0.99 at t=50 on all 100 v 300)


def test_sweep_over_t_and_a_sweep_that_mixes_t_and_ts_is_refused(tmp_path: Path) -> None:
    swept = sweep(load_policy(make_tiny_setup(tmp_path / "t", attacks="{sima: {}}")), "sima", {"t": [10, 200], "p": [2, 4]}, progress=False)
    assert [row.params for row in swept.rows] == [{"t": 10, "p": 2}, {"t": 10, "p": 4}, {"t": 200, "p": 2}, {"t": 200, "p": 4}]
    assert all(row.queries_per_sample == 1 for row in swept.rows)
    with_ts = load_policy(make_tiny_setup(tmp_path / "ts", attacks="{sima: {ts: [20, 100]}}"))
    assert [row.params for row in sweep(with_ts, "sima", {"p": [2]}, progress=False).rows] == [{"p": 2}]
    with pytest.raises(PolicyError, match=r"t=10: sima: t=10 and ts=\(20, 100\) are both given"):
        sweep(with_ts, "sima", {"t": [10]}, progress=False)


def test_registered_under_its_name() -> None:
    assert ATTACKS["sima"] is SimA and SimA.paper and SimA().describe() == {"name": "sima", "t": 50, "p": 4.0, "ts": None}


# ----------------------------------------------------------------------------- latent targets

SD = FIXTURES / "tiny_sd"


def _sd_policy(tmp_path: Path, name: str, *, members: str = "members", nonmembers: str = "nonmembers", attacks: str = "{sima: {}}", data: str = "", batch_size: int = 16) -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"version: 1\nname: {name}\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {SD / (members + '.csv')}, nonmembers: {SD / (nonmembers + '.csv')}{data}}}\n"
        f"attacks: {attacks}\nthresholds: {{auc: 0.9, tpr_at_1pct_fpr: null, decision: point}}\nruntime: {{device: cpu, batch_size: {batch_size}, seed: 0}}\n",
    )


def test_latent_sima_with_captions_finds_the_members_and_two_unseen_sets_stay_near_chance(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    captioned = audit(load_policy(_sd_policy(tmp_path, "captions", attacks="{sima: {}, pia: {}}")), target=sd_target, progress=False)
    assert captioned.conditioning.startswith("caption")
    # measured on the 40 v 40 fixture: SimA 1.000, PIA 0.919 (python -m naa_guard audit, README "Attacks")
    assert captioned.attacks["sima"].leakage.leak_auc >= 0.95
    assert captioned.attacks["sima"].leakage.direction == "members_higher"
    empty = audit(load_policy(_sd_policy(tmp_path, "empty", data=", conditioning: empty")), target=sd_target, progress=False)
    assert not np.array_equal(empty.attacks["sima"].member_scores, captioned.attacks["sima"].member_scores)  # cond reaches the UNet
    null = audit(load_policy(_sd_policy(tmp_path, "unseen", members="control_a", nonmembers="control_b", data=", limit: 40")), target=sd_target, progress=False)
    assert abs(null.attacks["sima"].leakage.auc - 0.5) <= 0.15  # 40 v 40: a standard error of about 0.065


def test_latent_scores_agree_across_batch_sizes(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    runs = [
        audit(load_policy(_sd_policy(tmp_path, f"b{size}", attacks="{sima: {ts: [20, 100]}}", data=", limit: 20", batch_size=size)), target=sd_target, progress=False)
        for size in (5, 16)
    ]
    assert_scores_close(runs[1].attacks["sima"].member_scores, runs[0].attacks["sima"].member_scores)  # other batch shapes
    assert_scores_close(runs[1].attacks["sima"].nonmember_scores, runs[0].attacks["sima"].nonmember_scores)
