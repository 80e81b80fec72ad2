"""Gates: an attack's leakage metric against the policy's limit, with a sentence a reviewer can act on.

A gate fails when its metric (in the direction that leaks more) is above the limit, or, with
``thresholds.decision: upper_ci``, when the upper bound of its confidence interval is. A TPR gate
that the number of non-members cannot resolve is an error (or, with
``thresholds.unresolvable: warn``, decided anyway with a warning).

Fail closed: a gate passes only when its compared number is finite and at most the limit; a NaN
or infinite metric is an error, never "not above the limit". A gate needs at least
:data:`MIN_PER_SIDE` members and non-members as scored (after ``limit``, ``--naa-quick`` and any
tuning split): with fewer, one sample moves the AUC by more than 0.05 and the bootstrap
interval collapses (one member gives ``AUC 1.000, CI 1.000-1.000``), so a verdict would rest on
chance. :func:`check_sample_counts` says so before any scoring. The epsilon gate compares the
empirical epsilon lower bound (:mod:`naa_guard.epsilon`) with ``thresholds.epsilon_lb``; the bound
is already a confidence bound, so ``decision`` does not apply to it. A regression against a
baseline report (:mod:`naa_guard.baseline`) can turn a passing gate into a failing one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from naa_guard.errors import InsufficientSamplesError, PolicyError
from naa_guard.metrics import FPR_LEVELS, LeakageReport, min_nonmembers_for

if TYPE_CHECKING:
    from naa_guard.epsilon import EpsilonBound
    from naa_guard.policy import Policy

GATE_LABELS = {"auc": "AUC", "tpr_at_1pct_fpr": "TPR@1%FPR", "tpr_at_0_1pct_fpr": "TPR@0.1%FPR", "epsilon_lb": "epsilon LB"}
MIN_PER_SIDE = 20  # members and non-members a gate needs, as scored


def _too_few(n_members: int, n_nonmembers: int, how: str) -> str | None:
    """Return why these counts cannot carry a verdict, or None when they can."""
    if min(n_members, n_nonmembers) >= MIN_PER_SIDE:
        return None
    return (
        f"{n_members} members / {n_nonmembers} non-members are scored{how}; a gate needs at least {MIN_PER_SIDE} of each: "
        f"with fewer, one sample moves the AUC by more than {1 / MIN_PER_SIDE:.2f} and its confidence interval collapses, "
        f"so any verdict would rest on chance"
    )


def check_sample_counts(policy: Policy, n_members: int, n_nonmembers: int, *, how: str = "", tuned: bool = False, n_control: int | None = None) -> None:
    """Return None; raise before any scoring when the sets as scored cannot resolve the policy's gates.

    ``how`` says how the counts came about (e.g. " after --naa-quick 5"); ``tuned``: the counts
    are the evaluation part of a tuning split, so a TPR gate that only the split leaves
    unresolvable is a policy error (fix: tune.fraction or more non-members).
    """
    problem = _too_few(n_members, n_nonmembers, how)
    if problem is not None:
        raise InsufficientSamplesError(
            f"{policy.source or policy.name}: {problem}. Fix: provide at least {MIN_PER_SIDE} members and {MIN_PER_SIDE} "
            f"non-members (raise data.limit / --limit / --naa-quick{', or lower tune.fraction' if tuned else ''})."
        )
    if n_control is not None and n_control < MIN_PER_SIDE:
        raise InsufficientSamplesError(
            f"{policy.source or policy.name}: data.control holds {n_control} image(s) as scored{how}; the null control needs at "
            f"least {MIN_PER_SIDE}, or its interval is so wide that it can flag nothing. Fix: add control images, or remove data.control."
        )
    if not tuned or policy.thresholds.unresolvable != "error":
        return
    for metric in policy.thresholds.limits():
        needed = min_nonmembers_for(FPR_LEVELS[metric]) if metric in FPR_LEVELS else 0
        if n_nonmembers < needed:
            fraction = policy.tune.fraction
            raise PolicyError(
                f"{policy.source or policy.name}: thresholds.{metric}: the tuning split (tune.fraction {fraction}) leaves "
                f"{n_nonmembers} non-members for evaluation{how}, and {GATE_LABELS[metric]} needs at least {needed} to rest on "
                f"10 false positives, so it cannot be resolved. Fix: provide at least {math.ceil(needed / (1 - fraction))} "
                f"non-members, lower tune.fraction, set thresholds.{metric}: null, or list single attack settings (no tuning)."
            )


@dataclass(frozen=True)
class GateResult:
    """One gate: an attack's metric against the policy's limit."""

    attack: str
    metric: str
    value: float
    ci: tuple[float, float]
    limit: float
    decision: str  # "point" or "upper_ci": which number was compared with the limit
    direction: str
    status: str  # "pass", "fail", or "error" (the metric cannot be resolved)
    message: str
    warning: str | None = None  # e.g. an unresolvable TPR gate evaluated under thresholds.unresolvable: warn
    baseline: dict[str, Any] | None = None  # the regression comparison, when a baseline report was given

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def label(self) -> str:
        return GATE_LABELS[self.metric]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form of the gate."""
        return {
            "attack": self.attack, "metric": self.metric, "value": self.value, "ci": list(self.ci),
            "limit": self.limit, "decision": self.decision, "direction": self.direction,
            "ci_width": self.ci[1] - self.ci[0], "status": self.status, "passed": self.passed,
            "message": self.message, "warning": self.warning, "baseline": self.baseline,
        }  # fmt: skip


def _direction_words(direction: str) -> str:
    return "members score higher" if direction == "members_higher" else "members score LOWER (reversed signal)"


def epsilon_gate(name: str, epsilon: EpsilonBound | None, limit: float) -> GateResult:
    """Return the epsilon gate of one attack: its epsilon lower bound against ``thresholds.epsilon_lb``."""
    if epsilon is None:
        return GateResult(name, "epsilon_lb", float("nan"), (float("nan"), float("nan")), limit, "point", "-", "error",
                          f"{name} epsilon lower bound was not computed, so thresholds.epsilon_lb cannot be decided.")  # fmt: skip
    what = (
        f"{name} epsilon lower bound {epsilon.value:.3f} (one-sided {epsilon.confidence:.0%} Clopper-Pearson, "
        f"Bonferroni over {epsilon.tests} thresholds, delta {epsilon.delta:g}; heuristic: fixed member set, not a formal DP audit)"
    )
    status, verb = ("fail", "exceeds") if epsilon.value > limit else ("pass", "within")
    point = (epsilon.value, epsilon.value)  # a confidence bound already: no interval around it
    return GateResult(name, "epsilon_lb", epsilon.value, point, limit, "point", epsilon.direction, status, f"{what} {verb} limit {limit:.3f}")


def evaluate_gates(policy: Policy, name: str, leakage: LeakageReport, epsilon: EpsilonBound | None = None) -> list[GateResult]:
    """Return the verdict of every enabled gate of the policy for one attack's leakage (and epsilon bound)."""
    thresholds = policy.thresholds
    gates = []
    for metric, limit in thresholds.limits().items():
        if metric == "epsilon_lb":
            gates.append(epsilon_gate(name, epsilon, limit))
            continue
        measured = leakage.metrics[metric]
        compared = measured.ci[1] if thresholds.decision == "upper_ci" else measured.value
        ci_text = f"{thresholds.confidence:.0%} CI {measured.ci[0]:.3f}-{measured.ci[1]:.3f}"
        # How far the AUC can be trusted, on a line of its own so the headline stays short.
        width = f"\n{GATE_LABELS[metric]} CI width {measured.ci[1] - measured.ci[0]:.3f}" if metric == "auc" else ""
        counts = f"{leakage.n_members} members / {leakage.n_nonmembers} non-members"
        what = f"{name} {GATE_LABELS[metric]} {measured.value:.3f} ({ci_text}, {counts}, {_direction_words(measured.direction)})"
        basis = " (upper CI bound)" if thresholds.decision == "upper_ci" else ""
        warning = None
        if metric in FPR_LEVELS and not measured.resolvable:
            warning = (
                f"{name} {GATE_LABELS[metric]} cannot be resolved with {leakage.n_nonmembers} non-members: "
                f"it rests on fewer than 10 false positives. Provide at least {min_nonmembers_for(FPR_LEVELS[metric])} "
                f"non-members, or set thresholds.{metric}: null to drop this gate"
            )
        too_few = _too_few(leakage.n_members, leakage.n_nonmembers, "")
        if too_few is not None:
            status, message, warning = "error", f"{name} {GATE_LABELS[metric]}: {too_few}. Provide at least {MIN_PER_SIDE} of each.", None
        elif not (math.isfinite(compared) and math.isfinite(limit)):
            # NaN compares as "not above" anything: without this check it would pass.
            status, message, warning = "error", f"{name} {GATE_LABELS[metric]} is {compared} (not a finite number), so the gate cannot be decided; check the attack's scores.", None
        elif warning is not None and thresholds.unresolvable == "error":
            status, message, warning = "error", f"{warning}, or thresholds.unresolvable: warn to gate on it anyway.", None
        elif compared > limit:
            status, message = "fail", f"{what} exceeds limit {limit:.3f}{basis}{width}"
        elif compared <= limit:
            status, message = "pass", f"{what} within limit {limit:.3f}{basis}{width}"
        else:  # unreachable for finite numbers; kept so that no path reaches "pass" by default
            status, message = "error", f"{what}: cannot compare {compared!r} with the limit {limit!r}"
        if warning is not None:
            message += f" (warning: not resolvable with {leakage.n_nonmembers} non-members)"
        gates.append(GateResult(name, metric, measured.value, measured.ci, limit, thresholds.decision, measured.direction, status, message, warning))
    return gates
