"""Validity checks: refuse a verdict the audit cannot stand behind (SPEC section 5).

The model-free checks (overlap, then distribution shift) run on every set's streamed summary
before any attack; the null control runs after scoring (:mod:`naa_guard.verdict.control`). Each
check raises :class:`AuditInvalidError` with what was found, the numbers and the fix; the passing
results go into every report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.samples import SampleSet
from naa_guard.samples.summary import SetSummary, summarize
from naa_guard.verdict.control import ControlCheck
from naa_guard.verdict.overlap import OverlapCheck, alpha_explanation, check_overlap
from naa_guard.verdict.shift import ShiftCheck, check_shift, shift_feature_positions

if TYPE_CHECKING:
    from naa_guard.policy import ChecksSection


@dataclass
class ValidityReport:
    """The results of every validity check that ran, for reports."""

    overlap: list[OverlapCheck] = field(default_factory=list)
    shift: ShiftCheck | None = None
    control: dict[str, ControlCheck] = field(default_factory=dict)
    n_control: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "overlap": [check.to_dict() for check in self.overlap],
            "shift": self.shift.to_dict() if self.shift else None,
            "control": {name: check.to_dict() for name, check in self.control.items()} if self.n_control is not None else None,
        }

    def summary_lines(self) -> list[str]:
        """Return one line per check for the terminal and Markdown reports."""
        lines = []
        if self.overlap:
            sets = ", ".join(f"{c.first}/{c.second}" for c in self.overlap)
            lines.append(f"overlap check: no identical images between {sets}: ok")
        if self.shift is not None:
            lines.append(self.shift.summary())
        if self.n_control is None:
            lines.append("null control: not configured (set data.control to a second held-out set to check the pipeline)")
        for name, check in self.control.items():
            lines.append(
                f"null control ({check.n_control} images): {name} AUC {check.auc:.3f} "
                f"(CI {check.ci[0]:.3f}-{check.ci[1]:.3f}, allowed 0.5 +- {check.tolerance:.3f}): ok"
            )
        return lines


# (role -> (set, feature positions or None)) -> role -> summary: local by default, or spread over ranks
Summarizer = Callable[[dict[str, tuple[SampleSet, "np.ndarray | None"]]], dict[str, SetSummary]]


def _summarize_here(sets: dict[str, tuple[SampleSet, np.ndarray | None]]) -> dict[str, SetSummary]:
    return {role: summarize(samples, positions) for role, (samples, positions) in sets.items()}


def check_samples(members: SampleSet, nonmembers: SampleSet, control: SampleSet | None, settings: ChecksSection, *, seed: int, summarizer: Summarizer | None = None) -> ValidityReport:
    """Return the model-free checks' results (overlap, then shift); raise AuditInvalidError on a failure.

    Every set is streamed once through ``summarizer`` (default: here, chunk by chunk), which
    also surfaces any image that cannot be decoded before a model is loaded.
    """
    report = ValidityReport(n_control=None if control is None else len(control))
    positions = shift_feature_positions(len(members), len(nonmembers), settings, seed)
    sets = {"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})}
    summaries = (summarizer or _summarize_here)({role: (samples, positions.get(role)) for role, samples in sets.items()})
    explain = partial(alpha_explanation, sets)  # the alpha note must reach the user before an overlap stops the audit
    report.overlap.append(check_overlap(summaries["members"], summaries["nonmembers"], "members", "non-members", explain=explain))
    if control is not None:
        # A control image that is also a member (or a non-member) would make the null control vacuous.
        report.overlap.append(check_overlap(summaries["members"], summaries["control"], "members", "control set", explain=explain))
        report.overlap.append(check_overlap(summaries["nonmembers"], summaries["control"], "non-members", "control set", explain=explain))
    report.shift = check_shift(summaries["members"], summaries["nonmembers"], settings, seed)
    return report
