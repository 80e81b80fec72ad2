"""Can these counts resolve this gate? Decided from the sample counts alone, before any model or image loads.

A gate resolves when both verdicts are possible at the counts the audit will evaluate (after
``data.limit``, ``--limit`` / ``--naa-quick`` and a tuning split):

- **can pass** (``decision: upper_ci``): a model that does not leak at all must be able to pass.
  Its leak AUC is ``max(auc, 1 - auc)``, so it sits above 0.5 by about ``se * sqrt(2 / pi)``,
  and the gate compares the upper end of its interval, about ``z * se`` higher, where
  ``se = sqrt((n_m + n_n + 1) / (12 n_m n_n))`` is the null AUC's standard error (Mann-Whitney)
  and ``z`` the normal quantile of the policy's two-sided ``confidence``. TPR at FPR <= x works
  the same way: a null model's TPR there is about x (x as the non-members can resolve it), the
  leakier of two directions sits ``0.56 sd`` above it and the interval ``z sd`` further, with
  ``sd = sqrt(x (1 - x) (1 / n_m + 1 / n_n))`` (members above a threshold estimated from the
  non-members). ``benchmarks/bench_certify.py`` checks these figures against simulations with
  :func:`naa_guard.verdict.leakage.evaluate` (within about 0.006 for the AUC at 20 to 400 per side).
  If the expected upper bound of a null model is above the limit, no model can be certified.
- **enough false positives** (any decision): TPR at FPR <= x rests on x * n_nonmembers false
  positives and needs :data:`naa_guard.verdict.metrics.MIN_FALSE_POSITIVES` of them.
- **can fail** (the epsilon gate): the most a model can show is perfect separation, whose
  Clopper-Pearson bound at these counts, confidence and delta is finite; a limit at or above it
  can never fail. ``delta`` must be below ``1 / n_members`` (a larger delta lets the bound ignore
  every member and reports a leaking model as "no evidence").

Pure arithmetic on counts: importable without numpy, scikit-learn or torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import TYPE_CHECKING

from naa_guard.errors import InsufficientSamplesError, NaaGuardError, PolicyError
from naa_guard.verdict.wording import percent

if TYPE_CHECKING:
    from naa_guard.policy import Policy

__all__ = [
    "GATE_LABELS", "LARGEST_COUNT", "MIN_PER_SIDE", "Unresolvable", "check_policy_counts", "check_sample_counts", "describe_counts", "explain_unresolvable", "evaluated_counts", "more_samples", "needed_per_side", "null_auc_upper",
    "null_tpr_upper", "perfect_separation_epsilon", "smallest_certifiable_auc", "too_few", "unresolvable_before_loading", "unresolvable_gates",
]  # fmt: skip

# As naa_guard.verdict.metrics has them (tests/test_resolvable.py checks), copied so that this module imports nothing heavy.
MIN_FALSE_POSITIVES = 10
FPR_LEVELS: dict[str, float] = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0_1pct_fpr": 0.001}
GATE_LABELS = {"auc": "AUC", "tpr_at_1pct_fpr": "TPR@1%FPR", "tpr_at_0_1pct_fpr": "TPR@0.1%FPR", "epsilon_lb": "epsilon LB"}
MIN_PER_SIDE = 20  # an absolute floor under every gate: with fewer, one sample moves the AUC by more than 0.05
LARGEST_COUNT = 10**9  # per side: a limit that needs more is called impossible
_E_MAX_OF_TWO = 1.0 / math.sqrt(math.pi)  # E[max(Z1, Z2)] for independent standard normals
_E_ABS = math.sqrt(2.0 / math.pi)  # E|Z|


@dataclass(frozen=True)
class Unresolvable:
    """One gate these counts cannot resolve: why, and what would."""

    metric: str
    reason: str  # a sentence: what the counts cannot do, with the figure
    needed: int | None  # per side as evaluated (None: no count up to LARGEST_COUNT)
    nonmembers_only: bool  # True when only the non-members are short (a TPR gate's false positives)
    present: str  # e.g. "40 members / 40 non-members"
    nearest_limit: float | None = None  # the nearest limit these counts resolve: the smallest certifiable (AUC, TPR), the largest that can fail (epsilon)
    point_resolves: bool = False  # True when decision: point would resolve it (only the interval's upper end is out of reach)

    def describe_needed(self, tuned_fraction: float | None = None) -> str:
        """Return the count needed as a phrase; with a tuning split, also before the split."""
        if self.needed is None:
            return f"no count up to {LARGEST_COUNT:.0e} per side"
        who = "non-members" if self.nonmembers_only else f"members and {self.needed} non-members"
        phrase = f"at least {self.needed} {who}"
        if tuned_fraction is not None:
            before = math.ceil(self.needed / (1.0 - tuned_fraction))
            phrase += f" as evaluated, so {before} {'non-members' if self.nonmembers_only else 'of each'} before the tuning split"
        return phrase


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def null_auc_upper(n_members: int, n_nonmembers: int, confidence: float) -> float:
    """Return the expected upper CI bound of the leak AUC of a model that does not leak."""
    se = math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))
    return 0.5 + (_E_ABS + _z(confidence)) * se


def null_tpr_upper(n_members: int, n_nonmembers: int, max_fpr: float, confidence: float) -> float:
    """Return the expected upper CI bound of TPR at FPR <= ``max_fpr`` of a model that does not leak."""
    reached = math.floor(round(max_fpr * n_nonmembers, 6)) / n_nonmembers  # the FPR grid's last point <= x
    sd = math.sqrt(reached * (1.0 - reached) * (1.0 / n_members + 1.0 / n_nonmembers))
    return reached + (_E_MAX_OF_TWO + _z(confidence)) * sd


def perfect_separation_epsilon(n_members: int, n_nonmembers: int, confidence: float, delta: float) -> float:
    """Return the epsilon lower bound of perfectly separated, distinct scores (the most a model can show).

    As :func:`naa_guard.verdict.epsilon.epsilon_lower_bound` computes it: no error at the separating
    threshold, whose Clopper-Pearson upper bound for 0 errors in n trials is ``1 - level ** (1 / n)``,
    with ``level = (1 - confidence) / 2 / tests`` and one test per ROC point in both directions.
    """
    tests = 2 * (n_members + n_nonmembers + 1)
    level = (1.0 - confidence) / 2.0 / tests
    fpr_upper = -math.expm1(math.log(level) / n_nonmembers)
    fnr_upper = -math.expm1(math.log(level) / n_members)
    bounds = []
    for rate, other in ((fnr_upper, fpr_upper), (fpr_upper, fnr_upper)):
        kept = 1.0 - delta - rate
        bounds.append(math.log(kept) - math.log(other) if kept > 0 else -math.inf)
    return max(0.0, *bounds)


def needed_per_side(ok: Callable[[int], bool], start: int = 1) -> int | None:
    """Return the smallest n >= ``start`` with ``ok(n)`` true (``ok`` monotone in n), or None beyond LARGEST_COUNT."""
    if not ok(LARGEST_COUNT):
        return None
    if ok(start):
        return start
    low, high = start, start * 2
    while not ok(high):
        low, high = high, high * 2
    while high - low > 1:  # ok(high) and not ok(low)
        middle = (low + high) // 2
        low, high = (low, middle) if ok(middle) else (middle, high)
    return high


def smallest_certifiable_auc(n_members: int, n_nonmembers: int, confidence: float) -> float:
    """Return the smallest AUC limit that a model that does not leak can pass at these counts (upper_ci)."""
    return math.ceil(null_auc_upper(n_members, n_nonmembers, confidence) * 100.0) / 100.0


def _min_nonmembers(max_fpr: float) -> int:
    return int(math.ceil(round(MIN_FALSE_POSITIVES / max_fpr, 6)))


def _auc_problem(n_members: int, n_nonmembers: int, limit: float, confidence: float) -> Unresolvable | None:
    upper = null_auc_upper(n_members, n_nonmembers, confidence)
    if upper <= limit:
        return None
    needed = needed_per_side(lambda n: null_auc_upper(n, n, confidence) <= limit, start=MIN_PER_SIDE)
    return Unresolvable(
        "auc",
        f"a model that does not leak at all has an expected upper {percent(confidence)} bound of its leak AUC of {upper:.3f} at these "
        f"counts, above the limit {limit:.3f}, so even such a model is expected to fail this gate (decision: upper_ci)",
        needed, False, "", smallest_certifiable_auc(n_members, n_nonmembers, confidence), True,
    )


def _tpr_problem(metric: str, n_members: int, n_nonmembers: int, limit: float, confidence: float, upper_ci: bool) -> Unresolvable | None:
    x = FPR_LEVELS[metric]
    least = _min_nonmembers(x)
    if upper_ci:
        needed: int | None = needed_per_side(lambda n: null_tpr_upper(n, n, x, confidence) <= limit, start=max(least, MIN_PER_SIDE))
    else:
        needed = least
    if n_nonmembers < least:
        return Unresolvable(metric, f"it rests on {x:g} x {n_nonmembers} = {x * n_nonmembers:.3g} false positives, fewer than {MIN_FALSE_POSITIVES}", needed, not upper_ci, "")
    upper = null_tpr_upper(n_members, n_nonmembers, x, confidence) if upper_ci else -math.inf
    if upper <= limit:
        return None
    smallest = math.ceil(upper * 100.0) / 100.0
    return Unresolvable(
        metric,
        f"a model that does not leak at all has an expected upper {percent(confidence)} bound of its TPR there of {upper:.3f} at these "
        f"counts, above the limit {limit:.3f}, so even such a model is expected to fail this gate (decision: upper_ci)",
        needed, False, "", smallest if smallest <= 1.0 else None, True,
    )


def _epsilon_problem(n_members: int, n_nonmembers: int, limit: float, confidence: float, delta: float) -> Unresolvable | None:
    reach = perfect_separation_epsilon(n_members, n_nonmembers, confidence, delta)
    if limit < reach:
        return None
    needed = needed_per_side(lambda n: perfect_separation_epsilon(n, n, confidence, delta) > limit, start=MIN_PER_SIDE)
    return Unresolvable(
        "epsilon_lb",
        f"even perfectly separated scores give an epsilon lower bound of only {reach:.3f} at these counts (confidence "
        f"{confidence:g}, delta {delta:g}), so the limit {limit:.3f} can never fail",
        needed, False, "", reach if reach > 0 else None, False,
    )


def unresolvable_gates(policy: Policy, n_members: int, n_nonmembers: int) -> list[Unresolvable]:
    """Return every enabled gate of ``policy`` that these evaluated counts cannot resolve."""
    thresholds = policy.thresholds
    present = f"{n_members} members / {n_nonmembers} non-members"
    found: list[Unresolvable | None] = []
    for metric, limit in thresholds.limits().items():
        if metric == "epsilon_lb":
            found.append(_epsilon_problem(n_members, n_nonmembers, limit, thresholds.confidence, thresholds.delta))
        elif metric in FPR_LEVELS:
            found.append(_tpr_problem(metric, n_members, n_nonmembers, limit, thresholds.confidence, thresholds.decision == "upper_ci"))
        elif thresholds.decision == "upper_ci":
            found.append(_auc_problem(n_members, n_nonmembers, limit, thresholds.confidence))
    return [replace(p, present=present) for p in found if p is not None]


def evaluated_counts(policy: Policy, limit: int | None) -> tuple[int, int, int | None, bool]:
    """Return (members, non-members, control or None, tuned): the counts an audit will evaluate, from listings only.

    Lists the sets as the audit does (file names, manifest rows, array shapes: no image is
    decoded, no model loaded), applies ``limit`` and the tuning split of a policy that lists candidates.
    """
    from naa_guard.attacks.candidates import AttackCandidates
    from naa_guard.samples import list_samples

    def count(source: object, role: str) -> int:
        # listed exactly as the audit lists them (its caption and outside-file rules), never decoded
        data = policy.data
        return len(list_samples(source, size=1, channels=1, limit=limit, role=role, caption_column=data.caption_column, allow_outside=data.allow_outside, split=data.split_for(role), image_column=data.image_column, keys=data.keys_for(role)))  # type: ignore[arg-type]

    members, nonmembers = count(policy.data.members, "members"), count(policy.data.nonmembers, "nonmembers")
    control = None if policy.data.control is None else count(policy.data.control, "control")
    tuned = any(isinstance(params, AttackCandidates) for params in policy.attacks.values())
    if tuned:  # as naa_guard.tuning splits each side
        fraction = policy.tune.fraction
        members, nonmembers = (n - int(round(fraction * n)) for n in (members, nonmembers))
    return members, nonmembers, control, tuned


def too_few(n_members: int, n_nonmembers: int, how: str) -> str | None:
    """Return why these counts cannot carry a verdict, or None when they can."""
    if min(n_members, n_nonmembers) >= MIN_PER_SIDE:
        return None
    return (
        f"{n_members} members / {n_nonmembers} non-members are scored{how}; a gate needs at least {MIN_PER_SIDE} of each: "
        f"with fewer, one sample moves the AUC by more than {1 / MIN_PER_SIDE:.2f} and its confidence interval collapses, "
        f"so any verdict would rest on chance"
    )


def more_samples(policy: Policy, limit: int | None, tuned: bool) -> str:
    """Return the ways to evaluate more samples that apply: a set limit to raise, a tuning split to shrink, else more images."""
    if limit is None:
        ways = ["add images to the sets"]
    elif policy.data.limit == limit:
        ways = [f"raise data.limit (now {limit}) if the sets hold more, or add images"]
    else:
        ways = [f"raise --limit / --naa-quick (now {limit}) if the sets hold more, or add images"]
    if tuned:
        ways.append(f"lower tune.fraction (now {policy.tune.fraction:g})")
    return " or ".join(ways)


def check_sample_counts(
    policy: Policy, n_members: int, n_nonmembers: int, *, how: str = "", tuned: bool = False, n_control: int | None = None, limit: int | None = None,
) -> list[str]:  # fmt: skip
    """Return warnings; raise before any model or image loads when the counts as evaluated cannot resolve the policy's gates.

    ``how`` says how the counts came about (e.g. " after --naa-quick 5"); ``tuned``: the counts
    are the evaluation part of a tuning split; ``limit`` the per-side limit that applied (None: none). Every gate these counts cannot resolve
    (:mod:`naa_guard.verdict.resolvable`) is a PolicyError naming the gate, the count needed, the count
    present and the fixes, or a warning under ``thresholds.unresolvable: warn``.
    """
    where = policy.source or policy.name
    more = more_samples(policy, limit, tuned)
    problem = too_few(n_members, n_nonmembers, how)
    if problem is not None:
        raise InsufficientSamplesError(f"{where}: {problem}. Fix: provide at least {MIN_PER_SIDE} members and {MIN_PER_SIDE} non-members ({more}).")
    if n_control is not None and n_control < MIN_PER_SIDE:
        raise InsufficientSamplesError(
            f"{where}: data.control holds {n_control} image(s) as scored{how}; the null control needs at "
            f"least {MIN_PER_SIDE}, or its interval is so wide that it can flag nothing. Fix: add control images, or remove data.control."
        )
    thresholds = policy.thresholds
    if "epsilon_lb" in thresholds.limits() and thresholds.delta * n_members >= 1.0:
        raise PolicyError(
            f"{where}: thresholds.delta {thresholds.delta:g} is not below 1 / {n_members} (the members as evaluated{how}): a delta that "
            f"large lets the (epsilon, delta) bound ignore every member and report a leaking model as no evidence. "
            f"Fix: set thresholds.delta below {1.0 / n_members:.3g} (e.g. 1.0e-5), or thresholds.epsilon_lb: null."
        )
    explained = explain_unresolvable(policy, n_members, n_nonmembers, how=how, tuned=tuned, limit=limit)
    if not explained or thresholds.unresolvable == "warn":
        return [f"{line.splitlines()[0]} (gated anyway: thresholds.unresolvable: warn; its verdict is not certain either way)" for line in explained.values()]
    raise PolicyError(f"{where}: " + "\n".join(explained.values()))


def explain_unresolvable(policy: Policy, n_members: int, n_nonmembers: int, *, how: str = "", tuned: bool = False, limit: int | None = None) -> dict[str, str]:
    """Return, per gate these counts cannot resolve, its message: the gate, why, the count needed, the count present, the fixes that apply."""
    limits = policy.thresholds.limits()
    return {
        p.metric: (
            f"thresholds.{p.metric}: the {GATE_LABELS[p.metric]} gate (limit {limits[p.metric]:g}) cannot be resolved with {p.present} as "
            f"evaluated{how}: {p.reason}. Needed: {p.describe_needed(policy.tune.fraction if tuned else None)}; present: {p.present}.\n"
            f"Fix (any one): {'; '.join(_fixes(policy, p, limit, tuned))}."
        )
        for p in unresolvable_gates(policy, n_members, n_nonmembers)
    }


def _fixes(policy: Policy, problem: Unresolvable, limit: int | None, tuned: bool) -> list[str]:
    """Return the fixes that apply to one unresolvable gate, each with what it costs."""
    key, confidence = f"thresholds.{problem.metric}", policy.thresholds.confidence
    fixes = [f"evaluate more samples ({more_samples(policy, limit, tuned)})"] if problem.needed is not None else []
    if problem.nearest_limit is not None and problem.metric == "epsilon_lb":
        fixes.append(f"set {key} below {problem.nearest_limit:.3f} (the most these counts can show)")
    elif problem.nearest_limit is not None:
        fixes.append(f"raise {key} to {problem.nearest_limit:.2f} (the smallest limit a model that does not leak is expected to pass at these counts)")
    if problem.point_resolves:
        fixes.append(
            f"set thresholds.decision: point to gate on the estimate (what it gives up: a PASS no longer certifies at "
            f"{percent(confidence)} confidence; an estimate within the limit passes even when its interval reaches above it)"
        )
    fixes.append(f"set {key}: null to drop the gate")
    fixes.append("set thresholds.unresolvable: warn to gate on it anyway (its verdict then rests on counts that cannot resolve it)")
    return fixes


def unresolvable_before_loading(policy: Policy, limit: int | None) -> dict[str, str]:
    """Return, per gate, why the sets as listed cannot resolve it (empty under thresholds.unresolvable: warn).

    For pytest's collection: a set that cannot be listed is left to the audit, which reports it.
    """
    if policy.thresholds.unresolvable == "warn":
        return {}
    try:
        members, nonmembers, _, tuned = evaluated_counts(policy, limit)
    except NaaGuardError:
        return {}
    if too_few(members, nonmembers, "") is not None:
        return {}  # every gate: the audit's own error says so
    how = describe_counts(limit, tuned, policy.tune.fraction)
    return explain_unresolvable(policy, members, nonmembers, how=how, tuned=tuned, limit=limit)


def describe_counts(limit: int | None, tuned: bool, fraction: float) -> str:
    """Return how the evaluated counts came about, e.g. " after limit 40 and the tuning split (tune.fraction 0.2)"."""
    return (f" after limit {limit}" if limit is not None else "") + (f" and the tuning split (tune.fraction {fraction})" if tuned else "")


def check_policy_counts(policy: Policy, limit: int | None) -> list[str]:
    """Return warnings; raise when the sets as listed (no image decoded, no model loaded) cannot resolve the policy's gates."""
    members, nonmembers, control, tuned = evaluated_counts(policy, limit)
    if too_few(members, nonmembers, "") is not None:
        return []  # the audit says so after its data checks, which name a broken image first
    how = describe_counts(limit, tuned, policy.tune.fraction)
    return check_sample_counts(policy, members, nonmembers, how=how, tuned=tuned, limit=limit)
