"""Degenerate scores: scores that tie so much that their AUC and its bootstrap interval are no evidence.

The AUC counts every (member, non-member) pair: a member above the non-member counts 1, a tie
counts 1/2. If a fraction ``q`` of the ``n * m`` cross pairs are ties, the AUC is
``wins + q / 2`` with ``wins <= 1 - q``, so it is confined to ``[q/2, 1 - q/2]`` whatever the model
leaks: all scores alike (``q = 1``) give exactly 0.500, and the stratified bootstrap, which only
reshuffles the same tied values, gives an interval around 0.500 that looks like a certified "no
leak". Such a row is an error, never a PASS (fail closed). Two conditions make it one:

1. **A side without spread.** Let ``p_v`` be the share of one side's scores equal to value ``v``;
   ``pi = sum_v p_v**2`` is the chance that two of that side's scores (drawn with replacement) tie,
   and ``1 / pi`` its *effective number of distinct scores* (``n`` for ``n`` distinct scores, 1 for
   a constant side). By Cauchy-Schwarz the cross ties are ``q <= sqrt(pi_members * pi_nonmembers)``.
   A gate needs :data:`~naa_guard.verdict.resolvable.MIN_PER_SIDE` samples per side because then one
   sample moves the AUC by at most ``1 / MIN_PER_SIDE``; ties are allowed to cost no more:
   ``q / 2 <= 1 / MIN_PER_SIDE`` holds whenever each side has at least ``MIN_PER_SIDE / 2``
   effective distinct scores (:data:`MIN_EFFECTIVE_DISTINCT`). A constant side, or one where
   almost every score is the same value, fails this whatever the other side does: its own samples
   are not ranked at all, and its bootstrap resamples a handful of values (the collapse the count
   floor exists for: one member gives ``AUC 1.000, CI 1.000-1.000``).
2. **Cross ties beyond the AUC's resolution at these counts.** With ``n`` members and ``m``
   non-members the AUC moves in steps of ``1 / (n m)`` and, for scores that carry no signal, has
   the standard error ``se0 = sqrt((n + m + 1) / (12 n m))`` (Mann-Whitney). The ties may shift
   the AUC by at most half of that: ``q / 2 <= se0 / 2``, i.e. at most ``q n m <= se0 n m`` tied
   pairs. Below it the ties move the AUC less than the interval's own width; above it they could
   move a leaking model's AUC across the limit. This is the condition that grows with the counts:
   20 values shared by 2000 samples per side pass condition 1 but not this one.

**Collapse by precision.** Scores come from float32 model outputs (float16 in a half-precision
run, where the collapsed values already tie exactly), so two scores that differ only in the last
few bits of float32 are the same number: an exponent that underflows (``sima: {p: 1.0e-30}``
makes every ``|x|^p`` 1.0) or overflows to one value, or a calibrated score ``target - reference``
whose reference is a copy of the model, differ only by rounding noise. Before ties are counted,
each score is rounded to :data:`RESOLUTION_BITS` significant bits (4 float32 units in the last
place) of its *magnitude*: its own for a plain score, the larger of its two operands for a
calibrated difference (the difference of two float32 numbers is only known to their resolution).

Non-finite scores never reach here: :func:`naa_guard.verdict.metrics.validate_pair` rejects them
(a DataError, an audit error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from naa_guard.verdict.resolvable import MIN_PER_SIDE

# float32 carries 24 significant bits; 22 treats values within 4 units in the last place as one.
RESOLUTION_BITS = 22
# Condition 1: each side's effective number of distinct scores (1 / tie probability).
MIN_EFFECTIVE_DISTINCT = MIN_PER_SIDE / 2

SIDE_WORDS = {"members": "member", "nonmembers": "non-member"}


def at_resolution(scores: ArrayLike, magnitude: ArrayLike | None = None, *, bits: int = RESOLUTION_BITS) -> np.ndarray:
    """Return ``scores`` rounded to ``bits`` significant bits of ``magnitude`` (default: each score's own).

    With ``magnitude`` (e.g. the larger of a calibrated score's two operands, sample by sample) the
    rounding step is that of the magnitude, so a difference below the operands' resolution is 0.
    """
    values = np.asarray(scores, dtype=np.float64)
    size = np.abs(values) if magnitude is None else np.maximum(np.abs(values), np.abs(np.asarray(magnitude, dtype=np.float64)))
    _, exponent = np.frexp(size)  # size = mantissa * 2**exponent, mantissa in [0.5, 1)
    step = np.ldexp(1.0, exponent - bits)
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = np.round(values / step) * step
    return np.where(size > 0, rounded, 0.0)


def tie_probability(values: np.ndarray) -> float:
    """Return the chance that two of ``values`` drawn with replacement are equal (``sum_v p_v**2``)."""
    _, counts = np.unique(values, return_counts=True)
    shares = counts / values.size
    return float(np.sum(shares * shares))


def cross_tie_fraction(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Return the share of (member, non-member) pairs whose scores are equal."""
    values, counts = np.unique(members, return_counts=True)
    positions = np.searchsorted(values, nonmembers)
    inside = positions < values.size
    hits = np.zeros(nonmembers.size)
    hits[inside] = np.where(values[positions[inside]] == nonmembers[inside], counts[positions[inside]], 0)
    return float(hits.sum() / (members.size * nonmembers.size))


def null_auc_se(n: int, m: int) -> float:
    """Return the AUC's standard error for scores without signal and without ties (Mann-Whitney)."""
    return math.sqrt((n + m + 1) / (12.0 * n * m))


@dataclass(frozen=True)
class Degenerate:
    """Why a pair of score sets is no evidence: the side (or "both") and the numbers that show it."""

    side: str  # "members", "nonmembers" or "both" (the cross ties)
    reason: str

    def __str__(self) -> str:
        return self.reason


def _describe_side(values: np.ndarray, raw: np.ndarray, role: str) -> str:
    unique, counts = np.unique(values, return_counts=True)
    top = int(np.argmax(counts))
    common = raw[values == unique[top]]
    span = f"{common.min():.6g}" if common.min() == common.max() else f"{common.min():.6g} to {common.max():.6g}"
    return (
        f"the {len(values)} {SIDE_WORDS[role]} scores take {unique.size} distinct value(s) at float32 resolution, "
        f"{int(counts[top])} of them the same value ({span}); effective distinct scores {1.0 / tie_probability(values):.1f}, "
        f"at least {MIN_EFFECTIVE_DISTINCT:g} needed"
    )


def degenerate_scores(
    members: ArrayLike, nonmembers: ArrayLike, *, magnitudes: tuple[ArrayLike, ArrayLike] | None = None, bits: int = RESOLUTION_BITS,
) -> Degenerate | None:  # fmt: skip
    """Return why these finite score sets are no evidence of leakage or of its absence, or None.

    ``magnitudes`` gives, sample by sample, the size of what each score was computed from (a
    calibrated score's operands); see the module docstring for the two conditions.
    """
    raw = {"members": np.asarray(members, dtype=np.float64), "nonmembers": np.asarray(nonmembers, dtype=np.float64)}
    sizes = dict(zip(raw, magnitudes)) if magnitudes is not None else {role: None for role in raw}
    snapped = {role: at_resolution(scores, sizes[role], bits=bits) for role, scores in raw.items()}
    for role, values in snapped.items():
        if 1.0 / tie_probability(values) < MIN_EFFECTIVE_DISTINCT:
            return Degenerate(role, _describe_side(values, raw[role], role))
    n, m = raw["members"].size, raw["nonmembers"].size
    ties, se0 = cross_tie_fraction(snapped["members"], snapped["nonmembers"]), null_auc_se(n, m)
    if ties / 2.0 > se0 / 2.0:
        return Degenerate("both", (
            f"{ties:.1%} of the {n} x {m} member / non-member score pairs tie at float32 resolution (each counts 1/2), so the ties "
            f"alone can hide up to {ties / 2:.3f} of AUC; at these counts they may hide at most {se0 / 2:.3f} (half its standard error)"
        ))  # fmt: skip
    return None


def explain(name: str, setting: dict[str, object], reason: str) -> str:
    """Return the error sentence of a degenerate attack row: the attack, its setting, the side (in ``reason``), the fix."""
    params = ", ".join(f"{key}={value!r}" for key, value in setting.items() if key != "name")
    return (
        f"{name} ({params}): {reason}. Such scores are no evidence of leakage or of its absence: their AUC sits "
        "near 0.5 whatever the model leaks. Fix: change this setting in the policy's "
        f"attacks.{name.split('/')[0]} block (e.g. an exponent or timestep at which the scores underflow or overflow), "
        "audit in float32 (runtime.dtype) if half precision collapsed them, or use a model.reference that differs from the model"
    )
