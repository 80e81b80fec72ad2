"""naa-guard: membership-inference privacy gates for diffusion models."""

from __future__ import annotations

from naa_guard.errors import (
    AuditInvalidError,
    BaselineError,
    DataError,
    DistributedError,
    EnvironmentUnavailableError,
    InsufficientSamplesError,
    NaaGuardError,
    NonFiniteScoreError,
    OutputError,
    PolicyError,
    RankAborted,
    ReportError,
    TargetError,
)
from naa_guard.policy import Policy, load_policy
from naa_guard.version import __version__

__all__ = [
    "AuditInvalidError",
    "AuditResult",
    "BaselineError",
    "DataError",
    "DistributedError",
    "EnvironmentUnavailableError",
    "InsufficientSamplesError",
    "NaaGuardError",
    "NonFiniteScoreError",
    "OutputError",
    "Policy",
    "PolicyError",
    "RankAborted",
    "ReportError",
    "TargetError",
    "__version__",
    "audit",
    "load_policy",
]


def __getattr__(name: str):  # the audit engine imports torch: load it only when asked for
    if name in ("audit", "AuditResult"):
        import importlib

        # Not "from naa_guard import audit": that looks the name up on this package first, which
        # calls this __getattr__ again, forever.
        module = importlib.import_module("naa_guard.audit" if name == "audit" else "naa_guard.result")

        return getattr(module, name)
    raise AttributeError(f"module 'naa_guard' has no attribute {name!r}")
