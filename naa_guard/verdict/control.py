"""The null control (optional, after scoring): a set the model never saw, scored against the
non-members, must give an AUC near 0.5 with every attack; otherwise the pipeline is biased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.errors import AuditInvalidError
from naa_guard.samples import SampleSet
from naa_guard.verdict.leakage import evaluate

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ControlCheck:
    """One attack's control-vs-non-members AUC, which should be 0.5 within its tolerance."""

    attack: str
    auc: float  # control as positives
    ci: tuple[float, float]
    tolerance: float  # CI half-width + checks.control_margin
    n_control: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"auc": self.auc, "ci": list(self.ci), "tolerance": self.tolerance, "n_control": self.n_control, "passed": self.passed}


def control_auc(attack: str, control_scores: np.ndarray, nonmember_scores: np.ndarray, *, margin: float, confidence: float, seed: int) -> ControlCheck:
    """Return the null-control result of one attack: control AUC against the non-members."""
    report = evaluate(control_scores, nonmember_scores, confidence=confidence, seed=seed)
    low, high = report.metrics["auc"].ci
    ci = (low, high) if report.direction == "members_higher" else (1.0 - high, 1.0 - low)
    tolerance = (ci[1] - ci[0]) / 2.0 + margin
    return ControlCheck(attack, report.auc, ci, tolerance, len(control_scores), abs(report.auc - 0.5) <= tolerance)


def check_control(scores: dict[str, tuple[np.ndarray, np.ndarray]], control: SampleSet, *, margin: float, confidence: float, seed: int) -> dict[str, ControlCheck]:
    """Return each attack's null-control result; raise AuditInvalidError when one is biased.

    ``scores`` maps an attack to its (control scores, non-member scores).
    """
    checks = {name: control_auc(name, c, n, margin=margin, confidence=confidence, seed=seed) for name, (c, n) in scores.items()}
    failed = [check for check in checks.values() if not check.passed]
    if failed:
        details = "; ".join(
            f"{c.attack} AUC {c.auc:.3f} (CI {c.ci[0]:.3f}-{c.ci[1]:.3f}, allowed 0.5 +- {c.tolerance:.3f})" for c in failed
        )
        raise AuditInvalidError(
            f"the null control failed: the control set {control.source} ({len(control)} images declared unseen by the "
            f"model) is told apart from the non-members by {details}; a set the model never saw must "
            f"score like the non-members (AUC 0.5 within the CI half-width + checks.control_margin {margin:g}). "
            f"The pipeline is biased, so member AUCs would not measure membership. Fix: make the control "
            f"and the non-members two random held-out parts of one source with the same preprocessing, and "
            f"make sure neither contains training images."
        )
    return checks
