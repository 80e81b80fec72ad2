"""The exceptions naa-guard raises.

Every error a user can meet is a :class:`NaaGuardError`; its message says what went wrong, where
(file, key or sample), what was found against what was expected, and how to fix it::

    NaaGuardError                 base class; the CLI maps it to exit code 2
    ├── PolicyError               the policy file is missing, unreadable or does not validate
    ├── TargetError               the model folder cannot be loaded or cannot score these images
    ├── DataError                 a member / non-member / control set cannot be loaded
    ├── InsufficientSamplesError  too few samples to resolve a requested metric
    ├── AuditInvalidError         the audit ran but its verdict cannot be trusted
    │   └── NonFiniteScoreError   the model produced NaN or infinite predictions or scores
    ├── BaselineError             the baseline report is unreadable or measures something else
    ├── ReportError               a report.json to publish (card, MLflow, CI action) is damaged or inconsistent
    ├── EnvironmentUnavailableError  the policy asks for hardware this machine lacks (e.g. cuda)
    ├── OutputError               a report or JSON file cannot be written where it was asked for
    └── DistributedError          a rank of a distributed audit failed, died or could not join
        └── RankAborted           a rank stopped its share because another rank of the job failed
"""

from __future__ import annotations

__all__ = [
    "AuditInvalidError",
    "BaselineError",
    "DataError",
    "DistributedError",
    "EnvironmentUnavailableError",
    "InsufficientSamplesError",
    "NaaGuardError",
    "NonFiniteScoreError",
    "OutputError",
    "PolicyError",
    "RankAborted",
    "ReportError",
    "TargetError",
]


class NaaGuardError(Exception):
    """Raised for any problem naa-guard reports to a user (never for a bug of its own)."""


class PolicyError(NaaGuardError):
    """Raised when a policy file is missing, is not valid YAML, or fails validation."""


class TargetError(NaaGuardError):
    """Raised when the model folder cannot be loaded, is unsupported, or cannot take the images."""


class DataError(NaaGuardError):
    """Raised when a sample set is missing, empty, unreadable or inconsistent."""


class InsufficientSamplesError(NaaGuardError):
    """Raised when a gate asks for a metric that the sample counts cannot resolve."""


class AuditInvalidError(NaaGuardError):
    """Raised when the audit ran but its verdict would not be trustworthy (overlap, shift, bias)."""


class NonFiniteScoreError(AuditInvalidError):
    """Raised when the model's predictions or an attack's scores contain NaN or infinity."""


class BaselineError(NaaGuardError):
    """Raised when a baseline report cannot be read, or differs in model layout, samples or attack settings."""


class ReportError(NaaGuardError):
    """Raised when a report.json given to ``naa-guard card``, MLflow or the CI action is damaged, not naa-guard's, or inconsistent."""


class EnvironmentUnavailableError(NaaGuardError):
    """Raised when the policy or command asks for a device this machine does not have."""


class OutputError(NaaGuardError):
    """Raised when a report or JSON file cannot be written where the command line or policy says."""


class DistributedError(NaaGuardError):
    """Raised when a rank of a distributed audit fails outside naa-guard's own errors, dies, or cannot join."""


class RankAborted(DistributedError):
    """Raised in a rank that stops its share of a job because another rank of that job failed.

    Rank 0 reports the failed rank's own error instead; this one reaches a user only when no rank's
    error came back.
    """
