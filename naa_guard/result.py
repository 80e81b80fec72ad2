"""What an audit found: each attack's scores and leakage (:class:`AttackResult`) and the whole
audit with its gate verdicts (:class:`AuditResult`). Imports only the stages below it, so reports,
the CLI and the pytest plugin read results without the audit engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.tuning import TuningResult
from naa_guard.verdict.epsilon import EpsilonBound
from naa_guard.verdict.exposed import ExposedMembers
from naa_guard.verdict.gates import GateResult
from naa_guard.verdict.leakage import LeakageReport
from naa_guard.verdict.validity import ValidityReport
from naa_guard.version import __version__

if TYPE_CHECKING:
    pass


WORST_CASE_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr")


@dataclass(frozen=True)
class AttackResult:
    """One attack's scores and leakage metrics."""

    name: str
    params: dict[str, Any]
    queries_per_sample: int
    seconds: float
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    leakage: LeakageReport
    cached: bool = False
    control_scores: np.ndarray | None = None  # the null-control set's scores, when data.control is set
    tuning: TuningResult | None = None  # set when the policy listed candidate settings
    epsilon: EpsilonBound | None = None  # the empirical epsilon lower bound (naa_guard.verdict.epsilon)
    samples: dict[str, tuple[np.ndarray, tuple[str, ...]]] | None = None  # role -> (source indices, origins) of the scored samples

    def per_sample(self) -> dict[str, tuple[np.ndarray, tuple[str, ...], np.ndarray]]:
        """Return, by role, each scored sample's source index, origin (file or array index) and score."""
        scores = {"members": self.member_scores, "nonmembers": self.nonmember_scores, "control": self.control_scores}
        return {role: (indices, origins, scores[role]) for role, (indices, origins) in (self.samples or {}).items() if scores[role] is not None}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: headline metrics first, then the full leakage report."""
        metrics = self.leakage.metrics
        return {
            "auc": self.leakage.auc,
            "leak_auc": self.leakage.leak_auc,
            "direction": self.leakage.direction,
            "auc_ci": list(metrics["auc"].ci),
            "tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"].value,
            "tpr_at_0_1pct_fpr": metrics["tpr_at_0_1pct_fpr"].value,
            "asr": metrics["asr"].value,
            "queries_per_sample": self.queries_per_sample,
            "params": self.params,
            "seconds": self.seconds,
            "cached": self.cached,
            "metrics": self.leakage.to_dict(),
            **({"epsilon": self.epsilon.to_dict()} if self.epsilon is not None else {}),
            **({"tuning": self.tuning.to_dict()} if self.tuning is not None else {}),
            # every scored sample (its index in the source) and score: what a later baseline comparison pairs and recomputes
            "scores": {role: {"index": indices.tolist(), "score": scores.tolist()} for role, (indices, _, scores) in self.per_sample().items()},
        }


@dataclass
class AuditResult:
    """Everything an audit produced: per-attack scores and metrics, and gate verdicts."""

    name: str
    policy_path: str | None
    n_members: int
    n_nonmembers: int
    attacks: dict[str, AttackResult]
    gates: list[GateResult]
    device: str | None
    dtype: str
    seed: int
    limit: int | None
    model_loaded: bool
    warnings: list[str] = field(default_factory=list)
    checks: ValidityReport | None = None  # overlap, distribution shift and null control results
    conditioning: str | None = None  # the text condition a text-to-image model's queries got
    exposed: ExposedMembers | None = None  # the worst-case attack's most-exposed members
    fingerprint: dict[str, Any] | None = None  # what a baseline must share (naa_guard.verdict.fingerprint)
    environment: dict[str, Any] = field(default_factory=dict)  # versions, device, dtype, seed, policy hash

    @property
    def passed(self) -> bool:
        """Return True when there is at least one gate and every gate passed (no gate is never a pass)."""
        return bool(self.gates) and all(gate.passed for gate in self.gates)

    @property
    def errored(self) -> bool:
        """Return True when some gate could not be decided."""
        return any(gate.status == "error" for gate in self.gates)

    def worst_case(self) -> dict[str, dict[str, Any]]:
        """Return, per metric, the attack that leaks the most: its name, value, CI and direction.

        For ``auc`` the value is the leak AUC; ties go to the attack listed first.
        """
        if not self.attacks:
            return {}
        worst: dict[str, dict[str, Any]] = {}
        for metric in WORST_CASE_METRICS:
            name = max(self.attacks, key=lambda attack: self.attacks[attack].leakage.metrics[metric].value)
            measured = self.attacks[name].leakage.metrics[metric]
            worst[metric] = {
                "attack": name, "value": measured.value, "ci": list(measured.ci),
                "direction": measured.direction, "resolvable": measured.resolvable,
            }  # fmt: skip
        return worst

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON report."""
        return {
            "name": self.name,
            "policy": self.policy_path,
            "naa_guard_version": __version__,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "limit": self.limit,
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "conditioning": self.conditioning,
            "attacks": {name: result.to_dict() for name, result in self.attacks.items()},
            "worst_case": self.worst_case(),
            "gates": [gate.to_dict() for gate in self.gates],
            "warnings": self.warnings,
            "checks": self.checks.to_dict() if self.checks is not None else None,
            "exposed": self.exposed.to_dict() if self.exposed is not None else None,
            "fingerprint": self.fingerprint,
            "environment": self.environment,
            "passed": self.passed,
        }
