"""Read a report.json back to publish it (model card, MLflow, the CI action), checked first.

What is published must be exactly what the audit decided: the gated rows and their verdicts.
So a report.json is refused (:class:`~naa_guard.errors.ReportError`, never a PASS) when it cannot
be read, is not a naa-guard report, or its figures do not recompute from its stored scores
(:func:`naa_guard.verdict.baseline.load_baseline`), and when its gates do not agree with it:

- every attack result has one gate per gated metric, no other and none twice (the shape of
  :func:`naa_guard.verdict.gatelist.gated_rows`: a deleted failing row would leave a PASS);
- a gate's value and interval are its attack's stored figures;
- a gate says PASS only when its compared number (the interval's upper end under ``upper_ci``,
  the estimate under ``point``, the bound for ``epsilon_lb``) is within its limit and no
  regression was found;
- ``passed`` is true exactly when there is a gate and every gate passed;
- when the audited policy file is still where the report says, unchanged (its sha256 is the
  report's ``environment.policy_sha256``), the gates are exactly its gated rows and limits.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

from naa_guard.errors import BaselineError, PolicyError, ReportError
from naa_guard.verdict.baseline import COMPARED_METRICS, RECOMPUTE_TOLERANCE, load_baseline

GATE_METRICS = (*COMPARED_METRICS, "epsilon_lb")
STATUSES = ("pass", "fail", "error")


def read_report(path: Path) -> dict[str, Any]:
    """Return a naa-guard report.json whose figures recompute and whose gates agree with them; ReportError otherwise."""
    try:
        report = load_baseline(Path(path))
    except BaselineError as exc:
        text = str(exc).replace(f"baseline {path}", f"report {path}", 1).replace("baseline / --baseline / --naa-baseline", "the command")
        raise ReportError(f"{text}\nNothing is published from a report that does not check out.") from None
    problems = gate_problems(report)
    if problems:
        raise ReportError(
            f"report {path}: its gates do not agree with its figures ({'; '.join(problems)}). The file was edited or "
            f"damaged; nothing is published from it. Use the report.json the audit wrote."
        )
    return report


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    return float(value)


def _gate_problem(report: dict[str, Any], gate: Any) -> str | None:
    """Return what is wrong with one gate entry, or None."""
    if not isinstance(gate, dict):
        return f"a gate that is not a mapping ({gate!r})"
    attack, metric, status = gate.get("attack"), gate.get("metric"), gate.get("status")
    if attack not in report["attacks"] or metric not in GATE_METRICS or status not in STATUSES:
        return f"a gate of unknown attack, metric or status ({attack!r}, {metric!r}, {status!r})"
    if gate.get("passed") is not (status == "pass"):
        return f"{attack} {metric}: passed {gate.get('passed')!r} contradicts status {status!r}"
    try:
        value, limit = _number(gate["value"]), _number(gate["limit"])
        ci = (_number(gate["ci"][0]), _number(gate["ci"][1]))
    except (KeyError, TypeError, IndexError):
        return f"{attack} {metric}: value, ci or limit missing or not a number"
    if status == "error":
        return None
    if metric == "epsilon_lb":
        stored = (report["attacks"][attack].get("epsilon") or {}).get("epsilon_lb")
        if not isinstance(stored, (int, float)) or not math.isclose(value, stored, rel_tol=0.0, abs_tol=RECOMPUTE_TOLERANCE):
            return f"{attack} epsilon_lb: gate value {value!r} is not the attack's stored bound {stored!r}"
        compared = value
    else:
        entry = report["attacks"][attack]["metrics"]["metrics"][metric]
        stored = (float(entry["value"]), float(entry["ci"][0]), float(entry["ci"][1]))
        if not all(math.isclose(a, b, rel_tol=0.0, abs_tol=RECOMPUTE_TOLERANCE) for a, b in zip((value, *ci), stored)):
            return f"{attack} {metric}: gate {value!r} (CI {ci[0]!r}-{ci[1]!r}) is not the attack's stored {stored[0]!r} (CI {stored[1]!r}-{stored[2]!r})"
        decision = gate.get("decision")
        if decision not in ("point", "upper_ci"):
            return f"{attack} {metric}: unknown decision {decision!r}"
        compared = ci[1] if decision == "upper_ci" else value
    if status == "pass":
        regressed = isinstance(gate.get("baseline"), dict) and gate["baseline"].get("regressed") is not False
        if not (math.isfinite(compared) and math.isfinite(limit) and compared <= limit) or regressed:
            return f"{attack} {metric}: says PASS but {compared!r} vs limit {limit!r}" + (" with a regression" if regressed else "")
    return None


def gate_problems(report: dict[str, Any]) -> list[str]:
    """Return every way the report's gates disagree with its figures or with the shape of a policy's gated rows (empty: none)."""
    gates = report.get("gates")
    if not isinstance(gates, list) or not gates:
        return ["no gates: an audit with no gate certifies nothing"]
    problems = [problem for gate in gates if (problem := _gate_problem(report, gate)) is not None]
    if problems:
        return problems
    keys = Counter((gate["attack"], gate["metric"]) for gate in gates)
    metrics = {metric for _, metric in keys}
    problems += [f"{count} gates for {attack} {metric}" for (attack, metric), count in keys.items() if count > 1]
    problems += [f"no {metric} gate for {attack}" for attack in report["attacks"] for metric in sorted(metrics) if (attack, metric) not in keys]
    settings = ((report.get("fingerprint") or {}).get("attack_settings") or {}).get("attacks") or {}
    problems += [f"attack {name} of the audit's settings has no result" for name in settings if name not in report["attacks"]]
    problems += policy_problems(report)
    expected = all(gate["status"] == "pass" for gate in gates)
    if report.get("passed") is not expected:
        problems.append(f"passed is {report.get('passed')!r} but the gates say {expected!r}")
    return problems


def policy_problems(report: dict[str, Any]) -> list[str]:
    """Return how the gates differ from the audited policy's gated rows and limits; none when that policy file is gone or changed."""
    path, digest = report.get("policy"), (report.get("environment") or {}).get("policy_sha256")
    if not isinstance(path, str) or not isinstance(digest, str) or not Path(path).is_file():
        return []
    if hashlib.sha256(Path(path).read_bytes()).hexdigest() != digest:
        return []
    from naa_guard.policy import load_policy
    from naa_guard.verdict.gatelist import gated_rows

    try:
        rows = gated_rows(load_policy(Path(path)))
    except PolicyError:
        return []
    limits = {row.key: row.limit for row in rows}
    found = {(gate["attack"], gate["metric"]): gate["limit"] for gate in report["gates"]}
    problems = [f"no gate for {attack} {metric}, which the policy {path} gates" for attack, metric in limits if (attack, metric) not in found]
    problems += [f"a gate for {attack} {metric}, which the policy {path} does not list" for attack, metric in found if (attack, metric) not in limits]
    problems += [f"{key[0]} {key[1]}: limit {found[key]!r} but the policy {path} says {limit!r}" for key, limit in limits.items() if key in found and not math.isclose(float(found[key]), limit)]
    return problems


def verdict_word(report: dict[str, Any]) -> str:
    """Return the audit's verdict as the reports say it: PASS, ERROR, NOT CERTIFIED (every failed estimate within its limit) or FAIL."""
    gates = report["gates"]
    if all(gate["status"] == "pass" for gate in gates):
        return "PASS"
    if any(gate["status"] == "error" for gate in gates):
        return "ERROR"
    failed = [gate for gate in gates if gate["status"] == "fail"]
    leaks = [gate for gate in failed if not float(gate["value"]) <= float(gate["limit"]) or (gate.get("baseline") or {}).get("regressed")]
    return "FAIL" if leaks else "NOT CERTIFIED"


def worst_figures(report: dict[str, Any]) -> dict[str, float]:
    """Return, per gated metric, the largest gated value over the gated rows (the worst leak the verdict rests on)."""
    worst: dict[str, float] = {}
    for gate in report["gates"]:
        value = float(gate["value"])
        if math.isfinite(value):
            worst[gate["metric"]] = max(worst.get(gate["metric"], value), value)
    return worst
