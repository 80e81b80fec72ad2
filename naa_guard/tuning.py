"""Tuned attacks: each attack's strongest setting, chosen on a calibration split (SPEC section 6).

An attack block may list candidate values for any parameter, e.g.
``naa: {t: [20, 40], noise: [schedule, scaled]}``: every combination (the cartesian product) is a
candidate. The audit then splits members and non-members, seeded, into a calibration part
(``tune.fraction`` of each side, default 0.2) and a disjoint evaluation part; scores every
candidate on the calibration part; keeps the one with the highest leak AUC; and reports and gates
only on the evaluation part. Choosing on the images that are reported would inflate the result.

Tuning never crosses rows: a row is tuned on the scores it is gated on. The raw row ``name`` is
tuned on the model's own scores; with ``model.reference`` the calibrated row ``name/ref`` is tuned
separately on the calibrated scores, and each row carries its own :class:`TuningResult` (its own
candidate table). A choice made on calibrated scores never decides the raw row, or the reverse.

Ties are settled conservatively, never by the order of the list. Candidates whose calibration
leak AUCs are equal (within a quarter of the AUC's step ``1 / (2 n m)`` on the calibration
split, i.e. exactly tied up to float rounding) cannot be told apart on the calibration part, so
the tie is settled on the evaluation part in the model's disfavour: every tied candidate is scored
there and the one that leaks most (highest evaluation leak AUC) is the one reported and gated.
That choice looks at the evaluation part, which can only raise the reported leak: a worst case,
never an optimistic one. (A reference that is a copy of the model ties every candidate at 0.5;
its calibrated row is then degenerate, an error: :mod:`naa_guard.verdict.degenerate`.)

The candidate lists themselves are expanded at policy validation (:mod:`naa_guard.attacks.candidates`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.errors import InsufficientSamplesError

if TYPE_CHECKING:
    import numpy as np

    from naa_guard.attacks.base import Attack, AttackParams
    from naa_guard.samples import SampleSet


# Fewer calibration samples per side than this make the choice between candidates a coin toss.
MIN_CALIBRATION_SAMPLES = 10


@dataclass(frozen=True)
class CalibrationSplit:
    """Members and non-members, each split into a calibration part and a disjoint evaluation part."""

    fraction: float
    calibration: tuple[SampleSet, SampleSet]  # (members, non-members)
    evaluation: tuple[SampleSet, SampleSet]


def subset(samples: SampleSet, positions: np.ndarray) -> SampleSet:
    """Return the samples at these positions (source indices, names and files kept)."""
    return samples.subset(positions)


def _split_side(samples: SampleSet, fraction: float, seed: int, role: str) -> tuple[SampleSet, SampleSet]:
    n_calibration = int(round(fraction * len(samples)))
    n_evaluation = len(samples) - n_calibration
    if min(n_calibration, n_evaluation) < MIN_CALIBRATION_SAMPLES:
        raise InsufficientSamplesError(
            f"tune.fraction {fraction} splits the {len(samples)} {role} into {n_calibration} for calibration and "
            f"{n_evaluation} for evaluation; each part needs at least {MIN_CALIBRATION_SAMPLES}. "
            f"Provide more {role}, or change tune.fraction."
        )
    import numpy as np

    order = np.random.default_rng([seed, 0 if role == "members" else 1]).permutation(len(samples))
    return subset(samples, np.sort(order[:n_calibration])), subset(samples, np.sort(order[n_calibration:]))


def split_for_tuning(members: SampleSet, nonmembers: SampleSet, fraction: float, seed: int) -> CalibrationSplit:
    """Return the seeded calibration / evaluation split of both sides."""
    calibration_members, evaluation_members = _split_side(members, fraction, seed, "members")
    calibration_nonmembers, evaluation_nonmembers = _split_side(nonmembers, fraction, seed, "nonmembers")
    return CalibrationSplit(fraction, (calibration_members, calibration_nonmembers), (evaluation_members, evaluation_nonmembers))


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's leakage on the calibration part."""

    params: dict[str, Any]  # the listed keys' values
    auc: float
    leak_auc: float
    direction: str

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"params": self.params, "auc": self.auc, "leak_auc": self.leak_auc, "direction": self.direction}


@dataclass(frozen=True)
class TuningResult:
    """How an attack was tuned: every candidate's calibration leakage and the one chosen."""

    fraction: float
    n_members: int  # calibration members
    n_nonmembers: int  # calibration non-members
    candidates: tuple[CandidateResult, ...]
    chosen: int  # index into candidates
    seconds: float
    scores: str = "raw"  # which scores the candidates were compared on: "raw" or "calibrated"
    tied: tuple[int, ...] = ()  # candidates tied at the best calibration leak AUC (two or more: settled on the evaluation part)
    tie_evaluation: tuple[float, ...] = ()  # the tied candidates' evaluation leak AUCs, in the order of ``tied``

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "fraction": self.fraction,
            "n_calibration_members": self.n_members,
            "n_calibration_nonmembers": self.n_nonmembers,
            "scores": self.scores,
            "chosen": self.candidates[self.chosen].params,
            "candidates": [{**candidate.to_dict(), "chosen": i == self.chosen} for i, candidate in enumerate(self.candidates)],
            "tie": None if len(self.tied) < 2 else {
                "rule": "tied on calibration: the candidate that leaks most on the evaluation part is gated",
                "candidates": [{"params": self.candidates[i].params, "evaluation_leak_auc": value} for i, value in zip(self.tied, self.tie_evaluation)],
            },
            "seconds": self.seconds,
        }  # fmt: skip


# (attack, members, non-members, progress label) -> (member scores, non-member scores, from cache)
ScoreFunction = Callable[["Attack", "SampleSet", "SampleSet", str], "tuple[np.ndarray, np.ndarray, bool]"]


def tied_at_best(leak_aucs: list[float], n_members: int, n_nonmembers: int) -> list[int]:
    """Return the positions whose leak AUC equals the highest one, up to float rounding.

    An AUC of ``n`` members and ``m`` non-members is a multiple of ``1 / (2 n m)`` (a tie counts
    1/2), so two different AUCs differ by at least that; a quarter of it separates a true tie from
    two neighbouring values.
    """
    tolerance = 0.25 / (2.0 * n_members * n_nonmembers)
    best = max(leak_aucs)
    return [i for i, value in enumerate(leak_aucs) if best - value <= tolerance]


def tune_attack(
    attack_class: type[Attack], candidates: AttackCandidates, split: CalibrationSplit, score: ScoreFunction, *, scores: str = "raw",
) -> tuple[AttackParams, TuningResult]:  # fmt: skip
    """Return the candidate with the highest leak AUC on the calibration part, and how each fared.

    ``score`` gives the scores of the row being tuned (``scores`` names them: "raw" or
    "calibrated"). Candidates tied at the best are scored on the evaluation part and the one that
    leaks most there is chosen (the conservative choice; see the module docstring).
    """
    from naa_guard.verdict.metrics import MEMBERS_HIGHER, MEMBERS_LOWER, auc

    started = time.perf_counter()
    members, nonmembers = split.calibration
    results = []
    for i, params in enumerate(candidates.candidates):
        attack = attack_class(params)
        label = f"{attack.name} calibration {i + 1}/{len(candidates.candidates)}"
        member_scores, nonmember_scores, _ = score(attack, members, nonmembers, label)
        raw = auc(member_scores, nonmember_scores)
        direction = MEMBERS_HIGHER if raw >= 0.5 else MEMBERS_LOWER
        results.append(CandidateResult(candidates.varied(params), raw, max(raw, 1.0 - raw), direction))
    tied = tied_at_best([result.leak_auc for result in results], len(members), len(nonmembers))
    evaluation: list[float] = []
    if len(tied) > 1:
        eval_members, eval_nonmembers = split.evaluation
        for i in tied:
            attack = attack_class(candidates.candidates[i])
            member_scores, nonmember_scores, _ = score(attack, eval_members, eval_nonmembers, f"{attack.name} tie {i + 1}/{len(candidates.candidates)}")
            value = auc(member_scores, nonmember_scores)
            evaluation.append(max(value, 1.0 - value))
        chosen = tied[max(range(len(tied)), key=lambda k: evaluation[k])]  # equal here too: the same leak either way
    else:
        chosen = tied[0]
    tuning = TuningResult(
        split.fraction, len(members), len(nonmembers), tuple(results), chosen, time.perf_counter() - started, scores, tuple(tied) if len(tied) > 1 else (), tuple(evaluation),
    )  # fmt: skip
    return candidates.candidates[chosen], tuning
