"""Leakage metrics of member vs non-member scores (SPEC section 4): ROC, AUC, TPR at a fixed FPR
and best-threshold balanced accuracy. Pure numpy, members labelled 1, higher score = more likely
a member.

The ROC and the AUC follow scikit-learn's ``roc_curve`` and ``roc_auc_score`` operation for
operation (the same sort, cumulative sums, divisions and trapezoid sum), so they agree with them
bit for bit (tests/test_metrics.py proves it on random and tied scores); they live here so that a
re-gate from cached scores does not pay for importing scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from naa_guard.errors import DataError, InsufficientSamplesError, NonFiniteScoreError

FPR_LEVELS: dict[str, float] = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}


# A TPR at FPR <= x rests on about x * n_nonmembers false positives; with fewer than this many the
# figure is mostly noise, so it is flagged as not resolvable.
MIN_FALSE_POSITIVES = 10


TPR_RULE = "max TPR at FPR <= x"


MEMBERS_HIGHER = "members_higher"


MEMBERS_LOWER = "members_lower"


def _as_scores(scores: ArrayLike, name: str) -> np.ndarray:
    """Return ``scores`` as a 1-D finite float64 array, or raise a NaaGuardError saying why not."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{name} could not be read as numbers ({exc}); expected a 1-D sequence of floats. "
            "Pass one score per sample as a list or numpy array."
        ) from exc
    if arr.ndim != 1:
        raise DataError(
            f"{name} has shape {arr.shape} ({arr.ndim}-D); expected a 1-D array with one score "
            "per sample. Flatten or select the score column before calling."
        )
    if arr.size == 0:
        raise InsufficientSamplesError(
            f"{name} is empty: observed 0 samples, expected at least 1. Membership metrics need "
            "both members and non-members; check that the sample set was loaded and scored."
        )
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise NonFiniteScoreError(
            f"{name} has {bad} non-finite value(s) (NaN or infinity) out of {arr.size}; expected "
            "all scores finite. The attack or model produced invalid output; check for numerical "
            "overflow (e.g. run in float32 instead of float16) and re-score."
        )
    return arr


def validate_pair(
    member_scores: ArrayLike, nonmember_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Return both score sets validated as 1-D finite float64 arrays."""
    return (
        _as_scores(member_scores, "member_scores"),
        _as_scores(nonmember_scores, "nonmember_scores"),
    )


def _check_max_fpr(max_fpr: float) -> float:
    """Return ``max_fpr`` as a float after checking it lies in (0, 1]."""
    x = float(max_fpr)
    if not (0.0 < x <= 1.0):
        raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr!r}.")
    return x


def labelled(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels, scores) with members labelled 1 and non-members 0."""
    y = np.concatenate([np.ones(member.size, dtype=np.int8), np.zeros(nonmember.size, np.int8)])
    return y, np.concatenate([member, nonmember])


def roc_curve(labels: np.ndarray, scores: np.ndarray, *, drop_intermediate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr, thresholds)`` of validated 0/1 ``labels`` (both present) and finite ``scores``.

    scikit-learn's ``roc_curve`` (version 1.3 on, unweighted): one point per distinct score from
    the highest down, after a (0, 0) point at threshold +inf; ``drop_intermediate`` drops the
    points in between collinear ones, as ``roc_auc_score`` does before its trapezoid sum.
    """
    order = np.argsort(-scores, kind="stable")  # descending, ties in input order
    sorted_scores = scores[order]
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]  # last index of each distinct score
    tps = np.cumsum(labels[order].astype(np.float64))[ends]
    fps = 1.0 + ends.astype(np.float64) - tps
    thresholds = sorted_scores[ends]
    if drop_intermediate and fps.shape[0] > 2:
        corners = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[corners], tps[corners], thresholds[corners]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds.astype(np.float64)]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC of validated ``labels`` and ``scores`` as scikit-learn's ``roc_auc_score`` gives it."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    # The trapezoid rule exactly as numpy / scipy write it; fpr never decreases, so no sign flip.
    return float(np.add.reduce(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc(
    member_scores: ArrayLike, nonmember_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr, thresholds)`` of the full ROC, one point per distinct score.

    ``drop_intermediate=False`` keeps collinear points: dropping them would hide operating points
    that a "max TPR at FPR <= x" read-out needs.
    """
    member, nonmember = validate_pair(member_scores, nonmember_scores)
    y, s = labelled(member, nonmember)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Return the ROC AUC with members as the positive class (ties count 1/2)."""
    member, nonmember = validate_pair(member_scores, nonmember_scores)
    y, s = labelled(member, nonmember)
    return roc_auc(y, s)


def tpr_at_from_curve(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> tuple[float, float]:
    """Return (max TPR over points with FPR <= max_fpr, the lowest FPR at which it is reached)."""
    ok = fpr <= max_fpr  # the (0, 0) point at threshold +inf is always admissible
    best = np.max(tpr[ok])
    # Along a flat stretch of the curve the TPR stays put while the FPR grows; the operating
    # point one would actually pick is the first (lowest-FPR) one, so report that FPR.
    i = np.flatnonzero(ok & (tpr == best))[0]
    return float(best), float(fpr[i])


def tpr_at_fpr(
    member_scores: ArrayLike, nonmember_scores: ArrayLike, max_fpr: float
) -> tuple[float, float]:
    """Return ``(tpr, fpr_reached)``: the max TPR at FPR <= ``max_fpr`` and the FPR it occurs at.

    No interpolation: only thresholds that actually exist count.
    """
    x = _check_max_fpr(max_fpr)
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    return tpr_at_from_curve(fpr, tpr, x)


def asr(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Return the best-threshold balanced accuracy, max over thresholds of (TPR + 1 - FPR) / 2.

    Balanced (not plain) accuracy, so unequal set sizes do not inflate it; taking the best
    threshold in hindsight makes it an optimistic "oracle" figure.
    """
    fpr, tpr, _ = roc(member_scores, nonmember_scores)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def min_nonmembers_for(max_fpr: float) -> int:
    """Return the smallest non-member count at which TPR at FPR <= ``max_fpr`` is resolvable."""
    x = _check_max_fpr(max_fpr)
    # round() first: 10 / 0.001 may land a hair above 10000 and ceil would give 10001.
    return int(math.ceil(round(MIN_FALSE_POSITIVES / x, 6)))


def curve_metrics(
    cm: np.ndarray, cn: np.ndarray, n_m: int, n_n: int, levels: tuple[float, ...]
) -> dict[str, np.ndarray]:
    """Return per-row AUC, ASR, and TPR / FPR reached at each level, from per-threshold counts.

    ``cm`` and ``cn`` have shape (rows, steps): how many members / non-members sit at each distinct
    score, columns ordered from the most member-like score to the least. One column is one
    threshold step, so tied scores move TPR and FPR together, as in ``roc_curve``. Columns with no
    samples add a repeated point, which changes none of the metrics.
    """
    tp = np.cumsum(cm, axis=1)
    fp = np.cumsum(cn, axis=1)
    # Mann-Whitney count (doubled): a non-member is outscored by every member at an earlier step
    # and tied (worth 1/2) with the members at its own step. Integers keep it exact.
    wins2 = (cn * (2 * (tp - cm) + cm)).sum(axis=1)
    out: dict[str, np.ndarray] = {"auc": wins2 / (2.0 * n_m * n_n)}
    # Same divisions as roc_curve, so FPR comparisons against a level agree bit for bit.
    tpr = tp / float(n_m)
    fpr = fp / float(n_n)
    # The (0, 0) point at threshold +inf gives 0.5, so ASR is never below 0.5.
    out["asr"] = np.maximum(np.max((tpr + 1.0 - fpr) / 2.0, axis=1), 0.5)
    rows = np.arange(cm.shape[0])
    for x in levels:
        # FPR and TPR both rise along the curve, so the admissible points are the first k and
        # the last of them has the largest TPR; k == 0 leaves only the (0, 0) point.
        k = np.count_nonzero(fpr <= x, axis=1)
        best_tp = np.where(k > 0, tp[rows, np.maximum(k - 1, 0)], 0)
        # Lowest-FPR point reaching that TPR (as in tpr_at_from_curve): the first step whose
        # member count reaches best_tp; best_tp == 0 is reached at the (0, 0) point.
        first = np.count_nonzero(tp < best_tp[:, None], axis=1)  # <= k - 1 when best_tp > 0
        out[f"tpr@{x!r}"] = best_tp / float(n_m)
        out[f"fpr@{x!r}"] = np.where(best_tp > 0, fpr[rows, first], 0.0)
    return out
