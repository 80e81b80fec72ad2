"""Tests for naa_guard.verdict.metrics and .leakage: hand-computed values, direction handling, bootstrap, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from naa_guard.errors import DataError, InsufficientSamplesError, NonFiniteScoreError
from naa_guard.verdict import leakage as L
from naa_guard.verdict import metrics as M


def _sklearn_reference(member: np.ndarray, nonmember: np.ndarray, levels: tuple[float, ...]):
    """Metrics straight from the spec's sklearn formulas, for one resample."""
    y = np.r_[np.ones(member.size), np.zeros(nonmember.size)]
    out = {}
    for name, s in (("members_higher", np.r_[member, nonmember]),
                    ("members_lower", -np.r_[member, nonmember])):
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        ref = {"auc": roc_auc_score(y, s), "asr": np.max((tpr + 1 - fpr) / 2)}
        for x in levels:
            ref[f"tpr@{x!r}"] = np.max(tpr[fpr <= x])
            # lowest FPR at which that TPR is reached (argmax returns the first maximum)
            ref[f"fpr@{x!r}"] = fpr[fpr <= x][np.argmax(tpr[fpr <= x])]
        out[name] = ref
    return out


# ----------------------------------------------------------------------------- hand-computed values


def test_tiny_set_hand_computed() -> None:
    # members [3, 2, 1] vs non-members [0.5, 1.5]; 6 (member, non-member) pairs:
    #   3>0.5 3>1.5 2>0.5 2>1.5 1>0.5 win, 1<1.5 loss  -> AUC = 5/6
    # ROC, thresholds descending (drop_intermediate=False):
    #   inf (0, 0); 3 (0, 1/3); 2 (0, 2/3); 1.5 (1/2, 2/3); 1 (1/2, 1); 0.5 (1, 1)
    # TPR at FPR <= 1%: best point with fpr 0 is (0, 2/3) -> (2/3, 0)
    # TPR at FPR <= 50%: (1/2, 1) -> (1, 0.5)
    # ASR = max (tpr + 1 - fpr)/2: at threshold 2: (2/3 + 1)/2 = 5/6; at 1: (1 + 1/2)/2 = 3/4
    m, n = [3, 2, 1], [0.5, 1.5]
    assert M.auc(m, n) == pytest.approx(5 / 6)
    fpr, tpr, thr = M.roc(m, n)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(thr[1:], [3, 2, 1.5, 1, 0.5])
    assert M.tpr_at_fpr(m, n, 0.01) == pytest.approx((2 / 3, 0.0))
    assert M.tpr_at_fpr(m, n, 0.5) == pytest.approx((1.0, 0.5))
    assert M.asr(m, n) == pytest.approx(5 / 6)


def test_ties_count_half_in_auc() -> None:
    # members [1, 1] vs non-members [1, 0]: pairs 1=1 (1/2), 1>0 (1), 1=1 (1/2), 1>0 (1)
    #   -> AUC = 3 / 4
    assert M.auc([1, 1], [1, 0]) == pytest.approx(0.75)
    # all four tied -> every pair counts 1/2 -> AUC = 1/2
    assert M.auc([2, 2], [2, 2]) == pytest.approx(0.5)


def test_tied_scores_form_one_threshold_step() -> None:
    # members [5, 1] vs non-members [1, 0, 0, 0]. The member at 1 is tied with a non-member, so
    # thresholds give: inf (0,0); 5 (0, 1/2); 1 (1/4, 1); 0 (1, 1).
    # There is no way to take the tied member without the tied non-member, so TPR at FPR <= 10%
    # is 1/2 (an order-dependent tie-break could wrongly report 1).
    assert M.tpr_at_fpr([5, 1], [1, 0, 0, 0], 0.1) == pytest.approx((0.5, 0.0))
    assert M.tpr_at_fpr([5, 1], [1, 0, 0, 0], 0.25) == pytest.approx((1.0, 0.25))


def test_tpr_at_fpr_keeps_collinear_points() -> None:
    # 3 members, 200 non-members. At scores 10, 9 and 8 one member ties one non-member; the
    # other 197 non-members score 0. ROC: (0,0) (0.005,1/3) (0.01,2/3) (0.015,1) (1,1).
    # (0.01, 2/3) lies on the straight line between its neighbours, so drop_intermediate=True
    # drops it and "max TPR at FPR <= 0.01" would read 1/3. Ours must keep it: (2/3, 0.01).
    m = [10.0, 9.0, 8.0]
    n = [10.0, 9.0, 8.0] + [0.0] * 197
    assert M.tpr_at_fpr(m, n, 0.01) == pytest.approx((2 / 3, 0.01))
    y = np.r_[np.ones(3), np.zeros(200)]
    fpr_d, tpr_d, _ = roc_curve(y, np.r_[m, n], drop_intermediate=True)
    assert np.max(tpr_d[fpr_d <= 0.01]) == pytest.approx(1 / 3)  # the under-report avoided


def test_fpr_reached_is_the_chosen_points_fpr() -> None:
    # members [10, 9, 8]; 102 non-members: 100 values in [0, 1) plus 9.5 and 8.5 between members.
    # Descending: 10 m (0, 1/3); 9.5 n (1/102, 1/3); 9 m (1/102, 2/3); 8.5 n (2/102, 2/3);
    #             8 m (2/102, 1); then the 100 low non-members.
    # max_fpr = 0.015: admissible fpr <= 0.015 -> last such point (1/102, 2/3).
    n = list(np.linspace(0, 0.99, 100)) + [9.5, 8.5]
    tpr, fpr = M.tpr_at_fpr([10, 9, 8], n, 0.015)
    assert tpr == pytest.approx(2 / 3)
    assert fpr == pytest.approx(1 / 102)
    # max_fpr = 0.02 (>= 2/102 = 0.0196): reaches (2/102, 1)
    assert M.tpr_at_fpr([10, 9, 8], n, 0.02) == pytest.approx((1.0, 2 / 102))
    # max_fpr = 0.5: admissible points run on to fpr ~0.5 at TPR 1, but TPR 1 is first reached
    # at fpr 2/102, which is the FPR reported (not the 0.5 limit, nor the last admissible point).
    assert M.tpr_at_fpr([10, 9, 8], n, 0.5) == pytest.approx((1.0, 2 / 102))


def test_perfect_separation() -> None:
    # every member above every non-member: AUC 1, TPR 1 at FPR 0, ASR 1
    m, n = [10, 11, 12], [0, 1, 2]
    rep = L.evaluate(m, n, n_bootstrap=50)
    assert rep.auc == 1.0 and rep.leak_auc == 1.0 and rep.direction == "members_higher"
    t = rep.metrics["tpr_at_1pct_fpr"]
    assert (t.value, t.fpr_reached, t.direction) == (1.0, 0.0, "members_higher")
    assert t.ci == (1.0, 1.0)  # every resample is still perfectly separated
    assert rep.metrics["asr"].value == 1.0


def test_reversed_direction() -> None:
    # members [0.5, 1, 4] vs non-members [2, 3]: member wins only 4>2, 4>3 -> raw AUC = 2/6 = 1/3
    # -> leak_auc = 2/3, direction members_lower.
    # On s:  4m (0,1/3); 3n (1/2,1/3); 2n (1,1/3) ... -> TPR@1% = 1/3, ASR = (1/3+1)/2 = 2/3
    # On -s: -0.5m (0,1/3); -1m (0,2/3); -2n (1/2,2/3); -3n (1,2/3); -4m (1,1)
    #        -> TPR@1% = 2/3 at fpr 0, ASR = (2/3 + 1)/2 = 5/6
    m, n = [0.5, 1, 4], [2, 3]
    rep = L.evaluate(m, n, n_bootstrap=50)
    assert rep.auc == pytest.approx(1 / 3)
    assert rep.leak_auc == pytest.approx(2 / 3)
    assert rep.direction == "members_lower"
    assert rep.metrics["auc"].value == pytest.approx(2 / 3)
    assert rep.metrics["auc"].direction == "members_lower"
    t = rep.metrics["tpr_at_1pct_fpr"]
    assert (t.value, t.fpr_reached, t.direction) == (pytest.approx(2 / 3), 0.0, "members_lower")
    a = rep.metrics["asr"]
    assert (a.value, a.direction) == (pytest.approx(5 / 6), "members_lower")
    # the raw-direction helpers still read the hypothesis direction
    assert M.tpr_at_fpr(m, n, 0.01)[0] == pytest.approx(1 / 3)


def test_each_metric_picks_its_own_direction() -> None:
    # 1000 non-members: 20 at 10 (top), 980 at 0. 1000 members: 50 at -10 (bottom), 950 at 5.
    # AUC: 950 members at 5 beat 980 non-members at 0 -> 950*980/1e6 = 0.931 -> members_higher.
    # TPR@1%, members_higher: the first step (score 10) already has fpr 0.02 > 0.01 -> 0.
    #         members_lower: the 50 members at -10 come first with fpr 0 -> 0.05.
    # ASR, members_higher: threshold 5 -> (0.95 + 1 - 0.02)/2 = 0.965.
    m = [-10.0] * 50 + [5.0] * 950
    n = [10.0] * 20 + [0.0] * 980
    rep = L.evaluate(m, n, n_bootstrap=50)
    assert rep.auc == pytest.approx(0.931) and rep.direction == "members_higher"
    t = rep.metrics["tpr_at_1pct_fpr"]
    assert (t.value, t.direction, t.fpr_reached) == (pytest.approx(0.05), "members_lower", 0.0)
    assert rep.metrics["asr"].value == pytest.approx(0.965)
    assert rep.metrics["asr"].direction == "members_higher"
    # The CI is taken in the chosen direction (members_lower), not the raw one (which is ~0).
    assert t.ci[0] > 0.02


def test_asr_is_balanced_on_unbalanced_sets() -> None:
    # 4 members and 1 non-member, all tied: the only ROC points are (0,0) and (1,1)
    #   -> ASR = 1/2, whereas "call everyone a member" has plain accuracy 4/5.
    assert M.asr([1, 1, 1, 1], [1]) == pytest.approx(0.5)
    # 2000 vs 1000 from one distribution: no signal, so ~0.5 (not 2000/3000 = 0.667)
    rng = np.random.default_rng(7)
    value = M.asr(rng.normal(size=2000), rng.normal(size=1000))
    assert 0.5 <= value < 0.56


# ----------------------------------------------------------------------------- numpy ROC == scikit-learn's


def _score_sets(seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Return (kind, member scores, non-member scores) cases: continuous, heavily tied, signed zeros, tiny, separated."""
    rng = np.random.default_rng(seed)
    n_m, n_n = int(rng.integers(1, 400)), int(rng.integers(1, 2000))
    zeros = np.array([0.0, -0.0])
    return [
        ("normal", rng.normal(0.3, 1, n_m), rng.normal(0, 1, n_n)),
        ("ties", rng.integers(0, 6, n_m).astype(float), rng.integers(0, 5, n_n).astype(float)),
        ("rounded", np.round(rng.normal(0.2, 1, n_m), 1), np.round(rng.normal(0, 1, n_n), 1)),
        ("signed zeros", rng.choice(np.r_[zeros, 1.0], n_m), rng.choice(np.r_[zeros, -1.0], n_n)),
        ("all tied", np.full(n_m, 2.5), np.full(n_n, 2.5)),
        ("separated", rng.uniform(2, 3, n_m), rng.uniform(0, 1, n_n)),
        ("one each", rng.normal(size=1), rng.normal(size=1)),
        ("wide range", rng.normal(0, 1, n_m) * 10.0 ** rng.integers(-300, 300, n_m), rng.normal(0, 1, n_n) * 1e-300),
    ]


@pytest.mark.parametrize("seed", range(12))
def test_numpy_roc_and_auc_are_scikit_learns_bit_for_bit(seed: int) -> None:
    """The audit path's ROC / AUC (no scikit-learn import) equal roc_curve / roc_auc_score exactly, ties included."""
    for kind, member, nonmember in _score_sets(seed):
        y, s = M.labelled(member, nonmember)
        for sign in (1.0, -1.0):
            for drop in (False, True):
                want = roc_curve(y, sign * s, drop_intermediate=drop)
                got = M.roc_curve(y, sign * s, drop_intermediate=drop)
                for name, g, w in zip(("fpr", "tpr", "thresholds"), got, want):
                    assert g.dtype == w.dtype and g.shape == w.shape, (kind, sign, drop, name)
                    np.testing.assert_array_equal(g, w, err_msg=f"{kind}, sign {sign}, drop_intermediate {drop}: {name}")
                    # signed zeros too: the same threshold value, not just an equal one
                    np.testing.assert_array_equal(np.signbit(g), np.signbit(w), err_msg=f"{kind}: {name} sign bits")
            assert M.roc_auc(y, sign * s) == roc_auc_score(y, sign * s), (kind, sign)
        assert M.auc(member, nonmember) == roc_auc_score(y, s), kind


def test_evaluate_point_values_are_scikit_learns() -> None:
    rng = np.random.default_rng(5)
    member, nonmember = np.round(rng.normal(0.4, 1, 120), 2), np.round(rng.normal(0, 1, 1500), 2)
    report = L.evaluate(member, nonmember, n_bootstrap=20)
    y, s = M.labelled(member, nonmember)
    assert report.auc == roc_auc_score(y, s)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert report.metrics["tpr_at_1pct_fpr"].value == np.max(tpr[fpr <= 0.01])
    assert report.metrics["asr"].value == np.max((tpr + 1.0 - fpr) / 2.0)


# ----------------------------------------------------------------------------- fast path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_path_matches_sklearn_on_tied_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct values -> many member/non-member ties; unbalanced sizes
    member = rng.integers(0, 12, size=300).astype(float) + 0.5
    nonmember = rng.integers(0, 10, size=170).astype(float)
    nonmember[:20] += 0.5  # some exact ties with members
    levels = (0.01, 0.05, 0.2, 1 / 17)
    b = 20
    idx_m = rng.integers(0, member.size, size=(b, member.size))
    idx_n = rng.integers(0, nonmember.size, size=(b, nonmember.size))
    fast = L._resample_metrics(member, nonmember, idx_m, idx_n, levels)
    for row in range(b):
        ref = _sklearn_reference(member[idx_m[row]], nonmember[idx_n[row]], levels)
        for direction, values in ref.items():
            for key, want in values.items():
                got = fast[direction][key][row]
                assert got == pytest.approx(want, abs=1e-12), (row, direction, key)


def test_fast_path_on_full_sample_matches_public_functions() -> None:
    rng = np.random.default_rng(3)
    member = np.round(rng.normal(0.3, 1, 500), 1)  # rounding creates ties
    nonmember = np.round(rng.normal(0, 1, 400), 1)
    ident_m = np.arange(member.size)[None, :]
    ident_n = np.arange(nonmember.size)[None, :]
    fast = L._resample_metrics(member, nonmember, ident_m, ident_n, (0.01,))["members_higher"]
    assert fast["auc"][0] == pytest.approx(M.auc(member, nonmember), abs=1e-12)
    assert fast["asr"][0] == pytest.approx(M.asr(member, nonmember), abs=1e-12)
    tpr, fpr = M.tpr_at_fpr(member, nonmember, 0.01)
    assert (fast["tpr@0.01"][0], fast["fpr@0.01"][0]) == pytest.approx((tpr, fpr))


# ----------------------------------------------------------------------------- bootstrap


def _shifted(n: int, seed: int, shift: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1, n), rng.normal(0, 1, n)


def test_ci_contains_point_estimate() -> None:
    m, n = _shifted(1500, 11)
    rep = L.evaluate(m, n, n_bootstrap=400)
    for name, mv in rep.metrics.items():
        assert mv.ci[0] <= mv.value <= mv.ci[1], name
        assert mv.ci[0] < mv.ci[1], name  # a real interval, not a degenerate one


def test_ci_deterministic_per_seed_and_seed_matters() -> None:
    m, n = _shifted(300, 12)
    a = L.evaluate(m, n, n_bootstrap=200, seed=5)
    b = L.evaluate(m, n, n_bootstrap=200, seed=5)
    c = L.evaluate(m, n, n_bootstrap=200, seed=6)
    assert a == b
    assert a.metrics["auc"].ci != c.metrics["auc"].ci
    assert a.metrics["auc"].value == c.metrics["auc"].value  # the seed only moves the interval


def test_bootstrap_resamples_each_side() -> None:
    # Members all score 0.5; non-members are 100 distinct values in [0, 1] (half below 0.5).
    # AUC = share of non-members below 0.5 = 1/2. Only resampling the non-members can move it,
    # and only resampling the members can move a CI built where the members vary instead.
    nonmember = np.linspace(0, 1, 100)
    rep = L.evaluate(np.full(50, 0.5), nonmember, n_bootstrap=200)
    assert rep.auc == pytest.approx(0.5)
    assert rep.metrics["auc"].ci[1] - rep.metrics["auc"].ci[0] > 0.1
    rep = L.evaluate(nonmember, np.full(50, 0.5), n_bootstrap=200)
    assert rep.metrics["auc"].ci[1] - rep.metrics["auc"].ci[0] > 0.1


def test_ci_narrows_with_more_samples() -> None:
    small = L.evaluate(*_shifted(200, 13), n_bootstrap=300)
    large = L.evaluate(*_shifted(5000, 13), n_bootstrap=300)
    for name in ("auc", "asr"):
        w_small = np.diff(small.metrics[name].ci)[0]
        w_large = np.diff(large.metrics[name].ci)[0]
        assert w_large < 0.5 * w_small, name  # width ~ 1/sqrt(n): expect ~0.2x


def test_ci_level_widens_interval() -> None:
    m, n = _shifted(500, 14)
    narrow = L.evaluate(m, n, n_bootstrap=400, confidence=0.5).metrics["auc"].ci
    wide = L.evaluate(m, n, n_bootstrap=400, confidence=0.99).metrics["auc"].ci
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


# ----------------------------------------------------------------------------- resolution


def test_min_nonmembers_for() -> None:
    assert M.min_nonmembers_for(0.01) == 1000
    assert M.min_nonmembers_for(0.001) == 10000
    assert M.min_nonmembers_for(0.03) == 334  # ceil(333.33)


@pytest.mark.parametrize(("n_non", "expect_1pct"), [(999, False), (1000, True)])
def test_resolvable_flags(n_non: int, expect_1pct: bool) -> None:
    rng = np.random.default_rng(4)
    rep = L.evaluate(rng.normal(size=50), rng.normal(size=n_non), n_bootstrap=5)
    assert rep.metrics["tpr_at_1pct_fpr"].resolvable is expect_1pct
    assert rep.metrics["tpr_at_0_1pct_fpr"].resolvable is False  # needs 10000


def test_to_dict_is_json_ready() -> None:
    rep = L.evaluate([0.5, 1, 4], [2, 3], n_bootstrap=20)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["tpr_rule"] == "max TPR at FPR <= x"
    assert d["direction"] == "members_lower"
    assert set(d["metrics"]) == {"auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr"}
    t = d["metrics"]["tpr_at_1pct_fpr"]
    assert t["rule"] == "max TPR at FPR <= x" and t["min_nonmembers"] == 1000
    assert t["resolvable"] is False and t["fpr_reached"] == 0.0
    assert isinstance(t["ci"], list) and len(t["ci"]) == 2
    assert d["metrics"]["auc"]["fpr_reached"] is None


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("which", ["member_scores", "nonmember_scores"])
def test_empty_set_raises(which: str) -> None:
    args = ([], [1.0]) if which == "member_scores" else ([1.0], [])
    msg = rf"{which} is empty.*observed 0.*at least 1"
    with pytest.raises(InsufficientSamplesError, match=msg):
        L.evaluate(*args)
    with pytest.raises(InsufficientSamplesError):
        M.auc(*args)


def test_nonfinite_scores_raise_with_count() -> None:
    with pytest.raises(NonFiniteScoreError, match=r"member_scores has 2 non-finite value\(s\)"):
        L.evaluate([1.0, np.nan, 3.0, np.inf], [0.0, 1.0])
    with pytest.raises(NonFiniteScoreError, match=r"nonmember_scores has 1 non-finite"):
        M.tpr_at_fpr([1.0], [-np.inf, 0.0], 0.01)


def test_two_dimensional_input_raises() -> None:
    with pytest.raises(DataError, match=r"member_scores has shape \(2, 2\).*1-D"):
        L.evaluate([[1.0, 2.0], [3.0, 4.0]], [0.0])
    with pytest.raises(DataError, match="1-D"):
        M.asr([1.0], 0.5)  # a scalar is not a score set either


def test_non_numeric_input_raises() -> None:
    with pytest.raises(DataError, match="could not be read as numbers"):
        M.auc(["a", "b"], [1.0])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="max_fpr"):
        M.tpr_at_fpr([1.0], [0.0], 0.0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        L.evaluate([1.0], [0.0], n_bootstrap=0)
    with pytest.raises(ValueError, match="confidence"):
        L.evaluate([1.0], [0.0], confidence=1.0)


def test_accepts_array_likes_and_ints() -> None:
    # tuples of ints and float32 arrays are accepted and give the same result
    assert M.auc((3, 2, 1), (0.5, 1.5)) == M.auc(np.array([3, 2, 1], np.float32), [0.5, 1.5])


def test_the_bootstrap_computed_a_few_rows_at_a_time_is_the_bootstrap_computed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: the resample draws are kept compact, drawn and tallied in blocks; the intervals must not change by a bit."""
    leakage = L
    assert leakage._WORK_CELLS < 650 * 1000  # the blocked runs below (1000 resamples) are really cut into several blocks
    rng = np.random.default_rng(5)
    member, nonmember = np.round(rng.normal(0.3, 1, 700), 2), np.round(rng.normal(0, 1, 650), 2)  # ties too
    blocked = leakage.evaluate(member, nonmember, confidence=0.95, seed=3)
    blocked_pair = leakage.paired_bootstrap((member, nonmember), (member * 0.5, nonmember), n_bootstrap=1000, seed=4)
    monkeypatch.setattr(leakage, "_WORK_CELLS", 1 << 40)  # every chunk drawn in one piece
    monkeypatch.setattr(leakage, "_BLOCK_CELLS", 1 << 40)  # and tallied in one piece
    whole = leakage.evaluate(member, nonmember, confidence=0.95, seed=3)
    whole_pair = leakage.paired_bootstrap((member, nonmember), (member * 0.5, nonmember), n_bootstrap=1000, seed=4)
    assert blocked.to_dict() == whole.to_dict()
    for mine, theirs in zip(blocked_pair, whole_pair):
        assert all(np.array_equal(mine[d][key], theirs[d][key]) for d in mine for key in mine[d])


@pytest.mark.parametrize("cells", [1, 1000, 1 << 17])
def test_blocked_resample_metrics_equal_the_one_block_values(monkeypatch: pytest.MonkeyPatch, cells: int) -> None:
    """Computing the resamples' metrics a block of rows at a time changes no value (ties included)."""
    rng = np.random.default_rng(8)
    member, nonmember = np.round(rng.normal(0.5, 1, 90), 1), np.round(rng.normal(0, 1, 700), 1)
    idx_m, idx_n = rng.integers(0, 90, (300, 90)), rng.integers(0, 700, (300, 700))
    levels = tuple(M.FPR_LEVELS.values())
    monkeypatch.setattr(L, "_BLOCK_CELLS", 1 << 40)  # one block: every row at once, as before blocking
    whole = L._resample_metrics(member, nonmember, idx_m, idx_n, levels)
    monkeypatch.setattr(L, "_BLOCK_CELLS", cells)
    blocked = L._resample_metrics(member, nonmember, idx_m, idx_n, levels)
    for direction, metrics in whole.items():
        for key, values in metrics.items():
            np.testing.assert_array_equal(blocked[direction][key], values, err_msg=f"{direction} {key}")
