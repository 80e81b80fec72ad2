"""The most-exposed members: the training images the worst-case attack singles out best.

For the attack with the highest leak AUC, every member's score is oriented in the attack's leak
direction and ranked against the non-members: its empirical FPR is the share of non-members that
score strictly higher (a threshold at that member's score flags it and only that share of
non-members; 0 means no non-member comes close). The k members with the highest oriented scores
are listed: what a team removes, deduplicates or re-weights before the next release.

Thumbnails are the model-ready images of those k members only (what the attack scored), taken from
the sample set by row, so a report never holds the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.verdict.metrics import MEMBERS_HIGHER

if TYPE_CHECKING:
    from naa_guard.samples import SampleSet
    from naa_guard.verdict.leakage import ScoredAttack


@dataclass(frozen=True)
class ExposedMember:
    """One member the attack singles out: where it came from, its score and its empirical FPR."""

    rank: int  # 1 = most exposed
    name: str  # the sample's name in its set (relative path, or file[index] for arrays)
    source: str  # the set's source (folder, manifest or array file)
    index: int  # index in the full source
    score: float  # the attack's raw score (higher = member, before orientation)
    fpr: float  # share of non-members scoring higher in the leak direction

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"rank": self.rank, "name": self.name, "source": self.source, "index": self.index, "score": self.score, "fpr": self.fpr}


@dataclass(frozen=True)
class ExposedMembers:
    """The k most-exposed members of the worst-case attack, with their thumbnails."""

    attack: str
    direction: str
    n_nonmembers: int
    members: list[ExposedMember]
    images: np.ndarray | None = field(default=None, repr=False)  # float32 (k, C, H, W) in [-1, 1], row-aligned

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (without the images)."""
        return {"attack": self.attack, "direction": self.direction, "n_nonmembers": self.n_nonmembers, "members": [m.to_dict() for m in self.members]}

    def table_rows(self) -> list[list[str]]:
        """Return rank, member, score, empirical FPR per member, for text and Markdown tables."""
        return [[str(m.rank), m.name, f"{m.score:.4g}", f"{m.fpr:.3%}"] for m in self.members]


def empirical_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, direction: str) -> np.ndarray:
    """Return, per member, the share of non-members scoring strictly higher in the leak direction."""
    sign = 1.0 if direction == MEMBERS_HIGHER else -1.0
    ordered = np.sort(sign * nonmember_scores)
    above = len(ordered) - np.searchsorted(ordered, sign * member_scores, side="right")
    return above / len(ordered)


def member_images(samples: SampleSet, rows: np.ndarray) -> np.ndarray:
    """Return the model-ready images of the given rows of a sample set (a copy of those rows only)."""
    if not len(rows):
        return np.empty((0, 0, 0, 0), dtype=np.float32)
    return np.concatenate([samples.decode(int(row), int(row) + 1) for row in rows]).astype(np.float32)  # these rows only, one at a time


def most_exposed(attacks: dict[str, ScoredAttack], members: SampleSet, k: int) -> ExposedMembers | None:
    """Return the ``k`` most-exposed members under the attack with the highest leak AUC (None: k is 0)."""
    if k < 1 or not attacks:
        return None
    worst = max(attacks.values(), key=lambda attack: attack.leakage.leak_auc)  # ties: the attack listed first
    direction = worst.leakage.direction
    oriented = worst.member_scores if direction == MEMBERS_HIGHER else -worst.member_scores
    rows = np.argsort(-oriented, kind="stable")[:k]  # stable: equal scores keep the set's order
    fpr = empirical_fpr(worst.member_scores, worst.nonmember_scores, direction)
    listed = [
        ExposedMember(rank + 1, members.names[row], str(members.source), int(members.indices[row]), float(worst.member_scores[row]), float(fpr[row]))
        for rank, row in enumerate(rows)
    ]
    return ExposedMembers(worst.name, direction, len(worst.nonmember_scores), listed, member_images(members, rows))
