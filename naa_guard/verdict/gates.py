"""Gates: an attack's leakage metric against the policy's limit, with a sentence a reviewer can act on.

Under ``thresholds.decision: upper_ci`` (the default) a gate passes only when the upper end of its
confidence interval is at or below the limit: a PASS then means "at the policy's confidence, the
leak is below the limit". It fails when the point estimate is above the limit, and in between it
is NOT CERTIFIED, a failure whose message says how far the interval reaches and roughly how many
samples would settle it. Under ``decision: point`` a gate passes when the point estimate is at or
below the limit, and its message says so and gives the interval's upper end. Gates the counts
cannot resolve are refused before any model loads (:mod:`naa_guard.verdict.resolvable`); a TPR gate met
unresolvable here anyway (``thresholds.unresolvable: warn``) is decided with a warning.

Fail closed: a gate passes only when its compared number is finite and at most the limit; a NaN
or infinite metric is an error, never "not above the limit". A gate needs at least
:data:`MIN_PER_SIDE` members and non-members as scored (after ``limit``, ``--naa-quick`` and any
tuning split): with fewer, one sample moves the AUC by more than 0.05 and the bootstrap
interval collapses (one member gives ``AUC 1.000, CI 1.000-1.000``), so a verdict would rest on
chance. :func:`check_sample_counts` says so before any scoring. The epsilon gate compares the
empirical epsilon lower bound (:mod:`naa_guard.verdict.epsilon`) with ``thresholds.epsilon_lb``; the bound
is already a confidence bound, so ``decision`` does not apply to it. A regression against a
baseline report (:mod:`naa_guard.verdict.baseline`) can turn a passing gate into a failing one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from naa_guard.verdict.leakage import LeakageReport, MetricValue
from naa_guard.verdict.metrics import FPR_LEVELS, min_nonmembers_for
from naa_guard.verdict.resolvable import GATE_LABELS, MIN_PER_SIDE, too_few
from naa_guard.verdict.wording import percent

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.verdict.epsilon import EpsilonBound



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


def _settle(value: float, upper: float, limit: float, leakage: LeakageReport) -> str:
    """Return why an estimate within the limit is not certified, and roughly how many samples would settle it."""
    head = f"the estimate is within the limit {limit:.3f} but its interval reaches {upper:.3f}, above it"
    if value >= limit:
        return head + "; while the estimate sits at the limit, no sample count settles it"
    # The interval's upper half-width shrinks about as 1/sqrt(n): scale both sides by this factor.
    ratio = (upper - value) / (limit - value)
    if not math.isfinite(ratio) or ratio > 3e4:  # squared below: keep it a count a person could collect
        return head + f"; the estimate {value:.3f} sits so close to the limit that no practical sample count settles it"
    factor = ratio**2
    members, nonmembers = math.ceil(factor * leakage.n_members), math.ceil(factor * leakage.n_nonmembers)
    return (
        head + f"; if the estimate stays at {value:.3f}, about {members} members and {nonmembers} non-members "
        f"({members - leakage.n_members} and {nonmembers - leakage.n_nonmembers} more) would settle it"
    )


def _direction_words(direction: str) -> str:
    return "members score higher" if direction == "members_higher" else "members score LOWER (reversed signal)"


def epsilon_gate(name: str, epsilon: EpsilonBound | None, limit: float) -> GateResult:
    """Return the epsilon gate of one attack: its epsilon lower bound against ``thresholds.epsilon_lb``."""
    if epsilon is None:
        return GateResult(name, "epsilon_lb", float("nan"), (float("nan"), float("nan")), limit, "point", "-", "error",
                          f"{name} epsilon lower bound was not computed, so thresholds.epsilon_lb cannot be decided.")  # fmt: skip
    what = (
        f"{name} epsilon lower bound {epsilon.value:.3f} (one-sided {percent(epsilon.confidence)} Clopper-Pearson, "
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
        if leakage.degenerate is not None:  # tied scores are no evidence either way (naa_guard.verdict.degenerate)
            measured = leakage.metrics.get(metric, MetricValue(float("nan"), (float("nan"), float("nan")), leakage.direction))
            message = f"{name} {GATE_LABELS[metric]} cannot be decided (degenerate scores): {leakage.degenerate}"
            gates.append(GateResult(name, metric, measured.value, measured.ci, limit, thresholds.decision, leakage.direction, "error", message))
            continue
        if metric == "epsilon_lb":
            gates.append(epsilon_gate(name, epsilon, limit))
            continue
        measured = leakage.metrics[metric]
        compared = measured.ci[1] if thresholds.decision == "upper_ci" else measured.value
        ci_text = f"{percent(thresholds.confidence)} CI {measured.ci[0]:.3f}-{measured.ci[1]:.3f}"
        # How far the AUC can be trusted, on a line of its own so the headline stays short.
        width = f"\n{GATE_LABELS[metric]} CI width {measured.ci[1] - measured.ci[0]:.3f}" if metric == "auc" else ""
        counts = f"{leakage.n_members} members / {leakage.n_nonmembers} non-members"
        what = f"{name} {GATE_LABELS[metric]} {measured.value:.3f} ({ci_text}, {counts}, {_direction_words(measured.direction)})"
        basis = f" (upper {percent(thresholds.confidence)} CI bound {measured.ci[1]:.3f})" if thresholds.decision == "upper_ci" else ""
        warning = None
        if metric in FPR_LEVELS and not measured.resolvable:
            warning = (
                f"{name} {GATE_LABELS[metric]} cannot be resolved with {leakage.n_nonmembers} non-members: "
                f"it rests on fewer than 10 false positives. Provide at least {min_nonmembers_for(FPR_LEVELS[metric])} "
                f"non-members, or set thresholds.{metric}: null to drop this gate"
            )
        scarce = too_few(leakage.n_members, leakage.n_nonmembers, "")
        if scarce is not None:
            status, message, warning = "error", f"{name} {GATE_LABELS[metric]}: {scarce}. Provide at least {MIN_PER_SIDE} of each.", None
        elif not all(math.isfinite(number) for number in (measured.value, compared, limit)):
            # NaN compares as "not above" anything: without this check it would pass.
            status, message, warning = "error", f"{name} {GATE_LABELS[metric]} is {compared} (not a finite number), so the gate cannot be decided; check the attack's scores.", None
        elif warning is not None and thresholds.unresolvable == "error":
            status, message, warning = "error", f"{warning}, or thresholds.unresolvable: warn to gate on it anyway.", None
        elif measured.value > limit:
            status, message = "fail", f"{what} exceeds limit {limit:.3f}{width}"
        elif compared > limit:  # upper_ci: the estimate is within, its interval is not
            status, message = "fail", f"{what}: NOT CERTIFIED at {percent(thresholds.confidence)}: {_settle(measured.value, measured.ci[1], limit, leakage)}{width}"
        elif compared <= limit:
            message = f"{what} within limit {limit:.3f}{basis}{width}"
            if thresholds.decision == "point":
                message = f"{what} within limit {limit:.3f} (point estimate; the upper {percent(thresholds.confidence)} CI bound is {measured.ci[1]:.3f}{', above the limit: not certified at this confidence' if measured.ci[1] > limit else ''}){width}"
            status = "pass"
        else:  # unreachable for finite numbers; kept so that no path reaches "pass" by default
            status, message = "error", f"{what}: cannot compare {compared!r} with the limit {limit!r}"
        if warning is not None:
            message += f" (warning: not resolvable with {leakage.n_nonmembers} non-members)"
        gates.append(GateResult(name, metric, measured.value, measured.ci, limit, thresholds.decision, measured.direction, status, message, warning))
    return gates
