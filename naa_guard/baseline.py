"""The regression gate: compare an audit with a previous release's ``report.json``.

A baseline is named by ``baseline: PATH`` in the policy, ``naa-guard audit --baseline PATH`` or
``pytest --naa-baseline PATH`` (the options win). It must answer the same question as the audit
now: the same model layout, the same member and non-member samples and the same attack settings
(:mod:`naa_guard.fingerprint`); otherwise it is an error that lists what differs.

The rule, per AUC and TPR gate of each attack, with ``thresholds.max_increase = m``::

    change         = now.value - baseline.value
    beyond_overlap = now.ci_low - baseline.ci_high
    regressed      = beyond_overlap > m

``beyond_overlap`` is the rise that even the most favourable reading of both confidence intervals
cannot explain (negative while the intervals overlap): a gate fails only when the model leaks
more than ``m`` beyond what sampling noise allows. A regressed gate fails even when it is within
its absolute limit; its message names the baseline value, the value now and the change. The
epsilon gate has no interval and a different scale, so it is not compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import BaselineError, PolicyError
from naa_guard.gates import GATE_LABELS

if TYPE_CHECKING:
    from naa_guard.gates import GateResult
    from naa_guard.policy import Policy

COMPARED_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")


def baseline_path(policy: Policy, override: Path | None) -> Path | None:
    """Return the baseline to compare with (the option wins over the policy); refuse max_increase without one."""
    chosen = override if override is not None else policy.baseline
    if chosen is None and policy.thresholds.max_increase is not None:
        raise PolicyError(
            f"{policy.source or policy.name}: thresholds.max_increase is set but no baseline report was given, so the "
            f"regression gate cannot be computed. Set baseline: PATH in the policy (or --baseline / --naa-baseline), "
            f"or set thresholds.max_increase: null for a first release."
        )
    return chosen


def load_baseline(path: Path) -> dict[str, Any]:
    """Return a baseline report.json, checked to carry the fingerprints and metrics it is compared on."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"baseline {path}: file not found. Point baseline / --baseline / --naa-baseline at the report.json of a previous audit.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"baseline {path}: cannot read it as a JSON report ({exc}). Give the report.json an earlier audit wrote.") from None
    if not isinstance(report, dict) or not isinstance(report.get("fingerprint"), dict) or not isinstance(report.get("attacks"), dict):
        raise BaselineError(
            f"baseline {path}: not a naa-guard report.json with fingerprints (keys 'fingerprint' and 'attacks' missing). "
            f"Re-run the baseline audit with this naa-guard version to produce one."
        )
    return report


def _section_differences(name: str, then: Any, now: Any) -> list[str]:
    if not isinstance(then, dict) or then.get("digest") != now.get("digest"):
        then = then if isinstance(then, dict) else {}
        readable = {key: value for key, value in now.items() if key != "digest"}
        details = [f"{key}: {then.get(key)!r} (baseline) vs {value!r} (now)" for key, value in readable.items() if then.get(key) != value]
        return [f"{name} differs" + (f" ({'; '.join(details)})" if details else f" (same summary, different content: digest {str(then.get('digest'))[:12]} vs {now['digest'][:12]})")]
    return []


def fingerprint_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Return one line per fingerprint section that differs between a baseline and this audit."""
    differences = []
    labels = {"model_layout": "model layout", "members": "member sample set", "nonmembers": "non-member sample set", "attack_settings": "attack settings"}
    for key, label in labels.items():
        differences += _section_differences(label, then.get(key), now[key])
    return differences


def _metric(report: dict[str, Any], attack: str, metric: str, path: Path) -> tuple[float, tuple[float, float]]:
    try:
        entry = report["attacks"][attack]["metrics"]["metrics"][metric]
        value, ci = float(entry["value"]), (float(entry["ci"][0]), float(entry["ci"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        raise BaselineError(f"baseline {path}: no {attack} {GATE_LABELS[metric]} value with a CI in it. Re-run the baseline audit with this naa-guard version.") from None
    if not all(math.isfinite(x) for x in (value, *ci)):
        raise BaselineError(f"baseline {path}: {attack} {GATE_LABELS[metric]} is not a finite number ({value}, CI {ci}).")
    return value, ci


def compare(gates: list[GateResult], fingerprint: dict[str, Any], report: dict[str, Any], path: Path, max_increase: float | None) -> list[GateResult]:
    """Return the gates with the baseline comparison attached, regressed ones failed; raise BaselineError on a mismatch."""
    differences = fingerprint_differences(report["fingerprint"], fingerprint)
    if differences:
        raise BaselineError(
            f"baseline {path} does not measure the same thing as this audit, so no regression can be computed:\n"
            + "\n".join(f"  - {line}" for line in differences)
            + "\nCompare with a baseline of the same model layout, samples and attack settings, or drop baseline / --baseline."
        )
    compared = []
    for gate in gates:
        if gate.metric not in COMPARED_METRICS:
            compared.append(gate)
            continue
        value, ci = _metric(report, gate.attack, gate.metric, path)
        beyond = gate.ci[0] - ci[1]
        regressed = max_increase is not None and beyond > max_increase
        record = {
            "report": str(path), "value": value, "ci": list(ci), "now": gate.value, "change": gate.value - value,
            "beyond_overlap": beyond, "max_increase": max_increase, "regressed": regressed,
        }  # fmt: skip
        if regressed and gate.status != "error":
            label = GATE_LABELS[gate.metric]
            message = (
                f"{gate.attack} {label} rose from {value:.3f} (baseline, CI {ci[0]:.3f}-{ci[1]:.3f}) to {gate.value:.3f} "
                f"(now, CI {gate.ci[0]:.3f}-{gate.ci[1]:.3f}): change {gate.value - value:+.3f}, {beyond:+.3f} beyond the "
                f"intervals' overlap > thresholds.max_increase {max_increase:.3f}\nbaseline: {path}\n{gate.message}"
            )
            gate = replace(gate, status="fail", message=message)
        compared.append(replace(gate, baseline=record))
    return compared
