"""An attack's leakage report: every metric in the direction that leaks more, with stratified
bootstrap confidence intervals (members and non-members resampled separately, seeded), and the
paired bootstrap of a change between two scorings of the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike

from naa_guard.errors import DataError
from naa_guard.verdict.degenerate import degenerate_scores
from naa_guard.verdict.metrics import FPR_LEVELS, MEMBERS_HIGHER, MEMBERS_LOWER, TPR_RULE, curve_metrics, labelled, min_nonmembers_for, roc_auc, roc_curve, tpr_at_from_curve, validate_pair

# Bound on (resamples in one chunk) x (distinct scores): how many resample positions are drawn at
# once. It fixes the order of the random draws (members then non-members, chunk by chunk), so it
# never changes: every interval ever reported depends on it.
_CHUNK_CELLS = 1 << 21
# Bound on the cells drawn at once within a chunk: the draws are kept as int32, made a few rows
# at a time (the same numbers as drawn at once) and tallied in blocks of _BLOCK_CELLS, so the
# bootstrap's memory stays near 20 MB whatever the sample sizes.
_WORK_CELLS = 1 << 18


def _draw_positions(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """Return ``rng.integers(0, size, size=(rows, size))``: the same numbers, drawn a few rows at a time, kept compact."""
    positions = np.empty((rows, size), dtype=np.int32 if size <= np.iinfo(np.int32).max else np.int64)
    step = max(1, _WORK_CELLS // max(size, 1))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        positions[start:stop] = rng.integers(0, size, size=(stop - start, size))
    return positions


# Cells per block of rows that the metrics are computed on (a cache-sized working set). Unlike
# _CHUNK_CELLS, which decides how the resamples are drawn, it changes no value.
_BLOCK_CELLS = 1 << 17


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
    n_u = values.size
    n_m, n_n = idx_m.shape[1], idx_n.shape[1]
    # Rows are independent: a few at a time keeps the many (rows, n_u) temporaries small enough
    # to stay in cache and be reused, instead of first-touching hundreds of MB (same values).
    block = max(1, _BLOCK_CELLS // max(n_u, n_m, n_n))
    parts: list[dict[str, dict[str, np.ndarray]]] = []
    for start in range(0, idx_m.shape[0], block):
        block_m, block_n = idx_m[start : start + block], idx_n[start : start + block]
        offsets = (np.arange(block_m.shape[0]) * n_u)[:, None]

        def counts(uid: np.ndarray, idx: np.ndarray) -> np.ndarray:
            # One bincount over (row, distinct score) cells tallies every resample of the block at once.
            flat = (uid[idx] + offsets).ravel()
            return np.bincount(flat, minlength=idx.shape[0] * n_u).reshape(idx.shape[0], n_u)

        cm, cn = counts(uid_m, block_m), counts(uid_n, block_n)
        # np.unique sorts ascending: reversed columns walk thresholds for "higher = member", the
        # natural order walks them for the negated score.
        parts.append({
            MEMBERS_HIGHER: curve_metrics(cm[:, ::-1], cn[:, ::-1], n_m, n_n, levels),
            MEMBERS_LOWER: curve_metrics(cm, cn, n_m, n_n, levels),
        })  # fmt: skip
    return {d: {key: np.concatenate([p[d][key] for p in parts]) for key in parts[0][d]} for d in (MEMBERS_HIGHER, MEMBERS_LOWER)}


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
        idx_m = _draw_positions(rng, member.size, rows)
        idx_n = _draw_positions(rng, nonmember.size, rows)
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
    now_m, now_n = validate_pair(*now)
    then_m, then_n = validate_pair(*then)
    if (now_m.size, now_n.size) != (then_m.size, then_n.size):
        raise DataError(f"paired scores need the same samples: {now_m.size}/{now_n.size} now vs {then_m.size}/{then_n.size} then")
    levels = tuple(FPR_LEVELS.values())
    rng = np.random.default_rng(seed)
    n_u = max(np.unique(np.concatenate([now_m, now_n])).size, np.unique(np.concatenate([then_m, then_n])).size)
    chunk = max(1, _CHUNK_CELLS // max(n_u, now_m.size, now_n.size))
    parts: list[tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]] = []
    for start in range(0, n_bootstrap, chunk):
        rows = min(chunk, n_bootstrap - start)
        idx_m = _draw_positions(rng, now_m.size, rows)
        idx_n = _draw_positions(rng, now_n.size, rows)
        parts.append((_resample_metrics(now_m, now_n, idx_m, idx_n, levels), _resample_metrics(then_m, then_n, idx_m, idx_n, levels)))

    def joined(which: int) -> dict[str, dict[str, np.ndarray]]:
        first = parts[0][which]
        return {d: {key: np.concatenate([p[which][d][key] for p in parts]) for key in first[d]} for d in first}

    return joined(0), joined(1)


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
    # Why the scores are no evidence (naa_guard.verdict.degenerate): every gate of this row is then an error.
    degenerate: str | None = None

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
            "degenerate": self.degenerate,
        }


def evaluate(
    member_scores: ArrayLike,
    nonmember_scores: ArrayLike,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
    magnitudes: tuple[ArrayLike, ArrayLike] | None = None,
) -> LeakageReport:
    """Return a :class:`LeakageReport`: every metric in its leakier direction, with bootstrap CIs.

    Each metric picks its own direction on the full sample; its interval is computed in that
    fixed direction (not re-chosen per resample, which would bias the interval upwards). Scores
    that tie too much to be evidence are marked ``degenerate`` (:mod:`naa_guard.verdict.degenerate`;
    ``magnitudes``: per sample, the size of what a calibrated score was computed from).
    """
    member, nonmember = validate_pair(member_scores, nonmember_scores)
    if not (0.0 < float(confidence) < 1.0):
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}.")
    if isinstance(n_bootstrap, bool) or int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an integer >= 1; got {n_bootstrap!r}.")
    n_bootstrap = int(n_bootstrap)

    y, s = labelled(member, nonmember)
    curves = {
        MEMBERS_HIGHER: roc_curve(y, s, drop_intermediate=False)[:2],
        MEMBERS_LOWER: roc_curve(y, -s, drop_intermediate=False)[:2],
    }
    raw_auc = roc_auc(y, s)
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
        points = {d: tpr_at_from_curve(fpr, tpr, x) for d, (fpr, tpr) in curves.items()}
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
        degenerate=None if (found := degenerate_scores(member, nonmember, magnitudes=magnitudes)) is None else str(found),
    )


class ScoredAttack(Protocol):
    """What verdicts read of an attack's result (an :class:`~naa_guard.result.AttackResult`): its scores and leakage."""

    name: str
    leakage: LeakageReport
    member_scores: np.ndarray
    nonmember_scores: np.ndarray

    def per_sample(self) -> dict[str, tuple[np.ndarray, tuple[str, ...], np.ndarray]]:
        """Return, by role, each scored sample's source index, origin and score."""
