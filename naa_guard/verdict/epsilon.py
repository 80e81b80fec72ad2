"""Empirical lower bound on the differential-privacy epsilon that an attack's scores imply.

A membership test "member when the score is at or above a threshold" with false positive rate FPR
and false negative rate FNR is impossible for an (epsilon, delta)-DP training algorithm unless
(Kairouz et al. 2015; used for auditing by Jagielski et al. 2020 and Nasr et al. 2021)::

    epsilon >= max(ln(1 - delta - FNR) - ln(FPR), ln(1 - delta - FPR) - ln(FNR))

The rates are estimated from finitely many samples, so the bound uses one-sided Clopper-Pearson
upper bounds FPR_ub and FNR_ub, each at level alpha / 2 (alpha = 1 - confidence), and every
threshold tried is paid for with a Bonferroni correction: with m tests each bound is taken at
level alpha / (2 m). The thresholds tried are every operating point of the ROC in both score
directions (members higher, members lower), so a reversed signal is found and paid for too.
The result is the maximum over thresholds, floored at 0.

This is a heuristic: a formal DP audit needs the member set to be drawn at random (each candidate
included with probability 1/2) and the training run repeated; a fixed member set measures one
model, one data set. Read it as "at least this much epsilon is visible", never as a DP guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaincinv

from naa_guard.verdict.metrics import MEMBERS_HIGHER, MEMBERS_LOWER, roc

__all__ = ["DISCLAIMER", "EpsilonBound", "clopper_pearson_upper", "epsilon_from_rates", "epsilon_lower_bound"]

DISCLAIMER = (
    "Heuristic lower bound: the member set is fixed, not randomised, so this is not a formal "
    "differential-privacy audit; it shows how much epsilon these attack scores make visible."
)


@dataclass(frozen=True)
class EpsilonBound:
    """The epsilon lower bound of one attack, and the operating point that gave it."""

    value: float  # max over thresholds of the bound from Clopper-Pearson upper rates, >= 0
    exact: float  # the same formula from the observed (uncorrected) rates, maximised: never below `value` (inf when a threshold has no errors)
    direction: str  # score direction of the best threshold
    fpr: float  # observed rates at the best threshold
    fnr: float
    fpr_upper: float  # their Clopper-Pearson upper bounds there
    fnr_upper: float
    tests: int  # thresholds tried (both directions): the Bonferroni factor
    confidence: float
    delta: float

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, with the method and the heuristic caveat spelled out."""
        return {
            "epsilon_lb": self.value,
            # JSON has no infinity: a threshold with no observed error makes the uncorrected value unbounded.
            "epsilon_from_observed_rates": self.exact if math.isfinite(self.exact) else None, "direction": self.direction,
            "fpr": self.fpr, "fnr": self.fnr, "fpr_upper": self.fpr_upper, "fnr_upper": self.fnr_upper,
            "thresholds_tried": self.tests, "confidence": self.confidence, "delta": self.delta,
            "method": "one-sided Clopper-Pearson upper bounds at alpha/2 each, Bonferroni over thresholds tried",
            "note": DISCLAIMER,
        }  # fmt: skip


def clopper_pearson_upper(errors: ArrayLike, trials: int, level: float) -> np.ndarray:
    """Return the one-sided Clopper-Pearson upper bound on a rate: P(rate > bound) <= ``level``.

    ``errors`` out of ``trials``: the bound is the (1 - level) quantile of Beta(errors + 1,
    trials - errors), and 1 when every trial erred. ``scipy.special.betaincinv`` is the routine
    behind ``scipy.stats.beta.ppf`` (both Boost's ibeta_inv; tests/test_epsilon.py checks they
    agree bit for bit), without the second of import time that ``scipy.stats`` costs a re-gate.
    """
    k = np.asarray(errors, dtype=np.float64)
    if trials < 1 or not 0.0 < level < 1.0 or np.any((k < 0) | (k > trials)):
        raise ValueError(f"need 0 <= errors <= trials, trials >= 1 and level in (0, 1); got trials={trials}, level={level}")
    full = k >= trials
    upper = betaincinv(k + 1.0, np.where(full, 1.0, trials - k), 1.0 - level)
    return np.where(full, 1.0, upper)


def epsilon_from_rates(fpr: ArrayLike, fnr: ArrayLike, delta: float) -> np.ndarray:
    """Return max(ln(1 - delta - FNR) - ln(FPR), ln(1 - delta - FPR) - ln(FNR)) elementwise.

    A term whose log argument is not positive contributes -inf; a zero rate in the denominator
    gives +inf (only observed rates can be zero; Clopper-Pearson bounds never are).
    """
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.maximum(1.0 - delta - fnr, 0.0)) - np.log(fpr)
        second = np.log(np.maximum(1.0 - delta - fpr, 0.0)) - np.log(fnr)
    first = np.where(np.isnan(first), -np.inf, first)  # log(0) - log(0): no evidence either way
    second = np.where(np.isnan(second), -np.inf, second)
    return np.maximum(first, second)


def epsilon_lower_bound(member_scores: ArrayLike, nonmember_scores: ArrayLike, *, confidence: float = 0.95, delta: float = 1e-5) -> EpsilonBound:
    """Return the Bonferroni-corrected Clopper-Pearson epsilon lower bound over all thresholds."""
    members = np.asarray(member_scores, dtype=np.float64)
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)
    if not 0.0 < confidence < 1.0 or not 0.0 <= delta < 1.0:
        raise ValueError(f"confidence must be in (0, 1) and delta in [0, 1); got {confidence}, {delta}")
    n_members, n_nonmembers = members.size, nonmembers.size
    points = []
    for direction, sign in ((MEMBERS_HIGHER, 1.0), (MEMBERS_LOWER, -1.0)):
        fpr, tpr, _ = roc(sign * members, sign * nonmembers)  # validates: finite, non-empty, 1-D
        points.append((direction, np.rint(fpr * n_nonmembers), np.rint((1.0 - tpr) * n_members)))
    tests = sum(len(false_pos) for _, false_pos, _ in points)
    level = (1.0 - confidence) / 2.0 / tests
    best: EpsilonBound | None = None
    exact = 0.0
    for direction, false_pos, false_neg in points:
        fpr_upper = clopper_pearson_upper(false_pos, n_nonmembers, level)
        fnr_upper = clopper_pearson_upper(false_neg, n_members, level)
        bounds = epsilon_from_rates(fpr_upper, fnr_upper, delta)
        exact = max(exact, float(np.max(epsilon_from_rates(false_pos / n_nonmembers, false_neg / n_members, delta))))
        i = int(np.argmax(bounds))
        if best is None or bounds[i] > best.value:
            best = EpsilonBound(
                value=max(0.0, float(bounds[i])), exact=0.0, direction=direction,
                fpr=float(false_pos[i] / n_nonmembers), fnr=float(false_neg[i] / n_members),
                fpr_upper=float(fpr_upper[i]), fnr_upper=float(fnr_upper[i]), tests=tests,
                confidence=float(confidence), delta=float(delta),
            )  # fmt: skip
    assert best is not None  # roc() always gives at least one operating point
    return replace(best, exact=exact)
