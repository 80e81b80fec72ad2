"""Leakage metrics of a membership-inference attack: AUC, TPR at low FPR, ASR, bootstrap CIs.

Conventions: label member = 1, non-member = 0; an attack's scores mean "higher = more likely
member".
An attack's hypothesis may be backwards for a given model (members can score *lower*), so
:func:`evaluate` computes every metric in both directions and reports the one that leaks more.

Point estimates come from scikit-learn (``roc_curve`` with ``drop_intermediate=False``,
``roc_auc_score``). The bootstrap uses a vectorised ROC written here instead, because calling
``roc_curve`` a thousand times is too slow; it reproduces ``roc_curve``'s tie handling (tied scores
form one threshold step) and is tested against scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve

from naa_guard.errors import DataError, InsufficientSamplesError, NonFiniteScoreError

__all__ = [
    "FPR_LEVELS", "MIN_FALSE_POSITIVES", "TPR_RULE", "LeakageReport", "MetricValue",
    "asr", "auc", "evaluate", "min_nonmembers_for", "paired_bootstrap", "roc", "tpr_at_fpr",
]  # fmt: skip

FPR_LEVELS: dict[str, float] = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}

# A TPR at FPR <= x rests on about x * n_nonmembers false positives; with fewer than this many the
# figure is mostly noise, so it is flagged as not resolvable.
MIN_FALSE_POSITIVES = 10

TPR_RULE = "max TPR at FPR <= x"

MEMBERS_HIGHER = "members_higher"
MEMBERS_LOWER = "members_lower"

# Bound on (resamples in one chunk) x (distinct scores), so the bootstrap's memory stays near
# a few tens of MB whatever the sample sizes.
_CHUNK_CELLS = 1 << 21


# ----------------------------------------------------------------------------- input checks


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


def _validate_pair(
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


def _labelled(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels, scores) with members labelled 1 and non-members 0."""
    y = np.concatenate([np.ones(member.size, dtype=np.int8), np.zeros(nonmember.size, np.int8)])
    return y, np.concatenate([member, nonmember])


# ----------------------------------------------------------------------------- point estimates


def roc(
    member_scores: ArrayLike, nonmember_scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr, thresholds)`` of the full ROC, one point per distinct score.

    ``drop_intermediate=False`` keeps collinear points: dropping them would hide operating points
    that a "max TPR at FPR <= x" read-out needs.
    """
    member, nonmember = _validate_pair(member_scores, nonmember_scores)
    y, s = _labelled(member, nonmember)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr, thresholds


def auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """Return the ROC AUC with members as the positive class (ties count 1/2)."""
    member, nonmember = _validate_pair(member_scores, nonmember_scores)
    y, s = _labelled(member, nonmember)
    return float(roc_auc_score(y, s))


def _tpr_at_from_curve(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> tuple[float, float]:
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
    return _tpr_at_from_curve(fpr, tpr, x)


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


# ----------------------------------------------------------------------------- fast ROC (bootstrap)


def _curve_metrics(
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
        # Lowest-FPR point reaching that TPR (as in _tpr_at_from_curve): the first step whose
        # member count reaches best_tp; best_tp == 0 is reached at the (0, 0) point.
        first = np.count_nonzero(tp < best_tp[:, None], axis=1)  # <= k - 1 when best_tp > 0
        out[f"tpr@{x!r}"] = best_tp / float(n_m)
        out[f"fpr@{x!r}"] = np.where(best_tp > 0, fpr[rows, first], 0.0)
    return out


def _resample_metrics(
    member: np.ndarray,
    nonmember: np.ndarray,
    idx_m: np.ndarray,
    idx_n: np.ndarray,
    levels: tuple[float, ...],
) -> dict[str, dict[str, np.ndarray]]:
    """Return metrics per direction for each resample, given index rows into each score set.

    ``idx_m`` has shape (rows, len(member)) and ``idx_n`` (rows, len(nonmember)); row b is the
    resample ``member[idx_m[b]]`` vs ``nonmember[idx_n[b]]``.
    """
    values, inverse = np.unique(np.concatenate([member, nonmember]), return_inverse=True)
    uid_m, uid_n = inverse[: member.size], inverse[member.size :]
    rows, n_u = idx_m.shape[0], values.size
    offsets = (np.arange(rows) * n_u)[:, None]

    def counts(uid: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # One bincount over (row, distinct score) cells tallies every resample at once.
        flat = (uid[idx] + offsets).ravel()
        return np.bincount(flat, minlength=rows * n_u).reshape(rows, n_u)

    cm, cn = counts(uid_m, idx_m), counts(uid_n, idx_n)
    n_m, n_n = idx_m.shape[1], idx_n.shape[1]
    # np.unique sorts ascending: reversed columns walk thresholds for "higher = member", the
    # natural order walks them for the negated score.
    return {
        MEMBERS_HIGHER: _curve_metrics(cm[:, ::-1], cn[:, ::-1], n_m, n_n, levels),
        MEMBERS_LOWER: _curve_metrics(cm, cn, n_m, n_n, levels),
    }


def _bootstrap(
    member: np.ndarray,
    nonmember: np.ndarray,
    levels: tuple[float, ...],
    n_bootstrap: int,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """Return each metric's stratified-bootstrap distribution (n_bootstrap values) per direction."""
    rng = np.random.default_rng(seed)
    n_u = np.unique(np.concatenate([member, nonmember])).size
    chunk = max(1, _CHUNK_CELLS // max(n_u, member.size, nonmember.size))
    parts: list[dict[str, dict[str, np.ndarray]]] = []
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        # Stratified: members and non-members are resampled separately, so every resample keeps
        # the original set sizes (and the FPR grid the resolution rule assumes).
        idx_m = rng.integers(0, member.size, size=(rows, member.size))
        idx_n = rng.integers(0, nonmember.size, size=(rows, nonmember.size))
        parts.append(_resample_metrics(member, nonmember, idx_m, idx_n, levels))
    return {
        d: {key: np.concatenate([p[d][key] for p in parts]) for key in parts[0][d]}
        for d in (MEMBERS_HIGHER, MEMBERS_LOWER)
    }


def paired_bootstrap(
    now: tuple[ArrayLike, ArrayLike],
    then: tuple[ArrayLike, ArrayLike],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Return the bootstrap distributions of two score sets of the SAME samples on the same resamples.

    ``now`` and ``then`` are (member scores, non-member scores), sample i of one being sample i of
    the other; every resample draws the same member and non-member positions for both, so the
    difference of a metric, resample by resample, is the paired difference (the samples' own
    difficulty cancels). Returns (now's, then's) metrics per direction, as :func:`evaluate` keys them.
    """
    now_m, now_n = _validate_pair(*now)
    then_m, then_n = _validate_pair(*then)
    if (now_m.size, now_n.size) != (then_m.size, then_n.size):
        raise DataError(f"paired scores need the same samples: {now_m.size}/{now_n.size} now vs {then_m.size}/{then_n.size} then")
    levels = tuple(FPR_LEVELS.values())
    rng = np.random.default_rng(seed)
    n_u = max(np.unique(np.concatenate([now_m, now_n])).size, np.unique(np.concatenate([then_m, then_n])).size)
    chunk = max(1, _CHUNK_CELLS // max(n_u, now_m.size, now_n.size))
    parts: list[tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]] = []
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        idx_m = rng.integers(0, now_m.size, size=(rows, now_m.size))
        idx_n = rng.integers(0, now_n.size, size=(rows, now_n.size))
        parts.append((_resample_metrics(now_m, now_n, idx_m, idx_n, levels), _resample_metrics(then_m, then_n, idx_m, idx_n, levels)))

    def joined(which: int) -> dict[str, dict[str, np.ndarray]]:
        first = parts[0][which]
        return {d: {key: np.concatenate([p[which][d][key] for p in parts]) for key in first[d]} for d in first}

    return joined(0), joined(1)


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MetricValue:
    """One leakage metric: its value in the leakier direction, with a bootstrap interval."""

    value: float  # in the direction that leaks more
    ci: tuple[float, float]  # bootstrap interval at `confidence`
    direction: str  # "members_higher" | "members_lower"
    fpr_reached: float | None = None  # TPR metrics only
    resolvable: bool = True  # TPR metrics: n_nonmembers * x >= 10

    def to_dict(self) -> dict[str, Any]:
        """Return the metric as JSON-ready plain types."""
        return {
            "value": float(self.value),
            "ci": [float(self.ci[0]), float(self.ci[1])],
            "direction": self.direction,
            "fpr_reached": None if self.fpr_reached is None else float(self.fpr_reached),
            "resolvable": bool(self.resolvable),
        }


@dataclass(frozen=True)
class LeakageReport:
    """All leakage metrics of one attack on one member / non-member split."""

    auc: float  # raw AUC, members-higher orientation
    leak_auc: float  # max(auc, 1 - auc)
    direction: str  # AUC's direction
    n_members: int
    n_nonmembers: int
    confidence: float
    metrics: dict[str, MetricValue]  # "auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr"
    # Recorded so that an interval can be reproduced exactly.
    n_bootstrap: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (plain floats, lists and strings)."""
        metrics: dict[str, Any] = {}
        for name, mv in self.metrics.items():
            entry = mv.to_dict()
            if name in FPR_LEVELS:
                x = FPR_LEVELS[name]
                entry.update(rule=TPR_RULE, max_fpr=x, min_nonmembers=min_nonmembers_for(x))
            metrics[name] = entry
        return {
            "auc": float(self.auc),
            "leak_auc": float(self.leak_auc),
            "direction": self.direction,
            "n_members": int(self.n_members),
            "n_nonmembers": int(self.n_nonmembers),
            "confidence": float(self.confidence),
            "ci_method": "stratified bootstrap, percentile interval",
            "n_bootstrap": int(self.n_bootstrap),
            "seed": int(self.seed),
            "tpr_rule": TPR_RULE,
            "metrics": metrics,
        }


def evaluate(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LeakageReport:
    """Return a :class:`LeakageReport`: every metric in its leakier direction, with bootstrap CIs.

    Each metric picks its own direction on the full sample; its interval is computed in that
    fixed direction (not re-chosen per resample, which would bias the interval upwards).
    """
    member, nonmember = _validate_pair(member_scores, nonmember_scores)
    if not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an integer >= 1; got {n_bootstrap!r}.")
    n_bootstrap = int(n_bootstrap)

    y, s = _labelled(member, nonmember)
    curves = {
        MEMBERS_HIGHER: roc_curve(y, s, drop_intermediate=False)[:2],
        MEMBERS_LOWER: roc_curve(y, -s, drop_intermediate=False)[:2],
    }
    raw_auc = float(roc_auc_score(y, s))
    auc_dir = MEMBERS_HIGHER if raw_auc >= 0.5 else MEMBERS_LOWER

    levels = tuple(FPR_LEVELS.values())
    boot = _bootstrap(member, nonmember, levels, n_bootstrap, seed)
    tail = (1.0 - float(confidence)) / 2.0 * 100.0

    def interval(direction: str, key: str) -> tuple[float, float]:
        lo, hi = np.percentile(boot[direction][key], [tail, 100.0 - tail])
        return float(lo), float(hi)

    def leakier(values: dict[str, float]) -> str:
        # Ties go to the attack's own hypothesis.
        return MEMBERS_HIGHER if values[MEMBERS_HIGHER] >= values[MEMBERS_LOWER] else MEMBERS_LOWER

    metrics: dict[str, MetricValue] = {
        "auc": MetricValue(
            value=max(raw_auc, 1.0 - raw_auc), ci=interval(auc_dir, "auc"), direction=auc_dir
        )
    }
    for name, x in FPR_LEVELS.items():
        points = {d: _tpr_at_from_curve(fpr, tpr, x) for d, (fpr, tpr) in curves.items()}
        d = leakier({k: v[0] for k, v in points.items()})
        metrics[name] = MetricValue(
            value=points[d][0],
            ci=interval(d, f"tpr@{x!r}"),
            direction=d,
            fpr_reached=points[d][1],
            resolvable=nonmember.size >= min_nonmembers_for(x),
        )
    asr_by_dir = {d: float(np.max((tpr + 1.0 - fpr) / 2.0)) for d, (fpr, tpr) in curves.items()}
    d = leakier(asr_by_dir)
    metrics["asr"] = MetricValue(value=asr_by_dir[d], ci=interval(d, "asr"), direction=d)

    return LeakageReport(
        auc=raw_auc,
        leak_auc=max(raw_auc, 1.0 - raw_auc),
        direction=auc_dir,
        n_members=int(member.size),
        n_nonmembers=int(nonmember.size),
        confidence=float(confidence),
        metrics=metrics,
        n_bootstrap=n_bootstrap,
        seed=int(seed),
    )
