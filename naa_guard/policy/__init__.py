"""The YAML policy a team writes, validated: the schema (:mod:`~naa_guard.policy.schema`), the strict
YAML reader and error messages (:mod:`~naa_guard.policy.load`, :mod:`~naa_guard.policy.yaml`) and the
checks a loaded policy gets before any model code loads (:mod:`~naa_guard.policy.preflight`).

The policy sits above the stages whose settings it validates (each attack declares its own
parameter model) and below the stages that act on a validated policy (scoring, verdicts, reports).
"""

from __future__ import annotations

from naa_guard.policy.load import load_policy, parse_policy, policy_schema
from naa_guard.policy.preflight import preflight
from naa_guard.policy.schema import LOADER_PATTERN, POLICY_VERSION, AttackParamsError, ChecksSection, DataSection, ModelSection, Policy, ReportSection, Runtime, StrictNumber, Thresholds, TuneSection

__all__ = [
    "LOADER_PATTERN", "POLICY_VERSION", "AttackParamsError", "ChecksSection", "DataSection", "ModelSection", "Policy",
    "ReportSection", "Runtime", "StrictNumber", "Thresholds", "TuneSection", "load_policy", "parse_policy", "policy_schema",
    "preflight",
]  # fmt: skip
