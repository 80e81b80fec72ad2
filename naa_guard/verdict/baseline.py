"""The regression gate: compare an audit with a previous release's ``report.json``, sample by sample.

A baseline is named by ``baseline: PATH`` in the policy, ``naa-guard audit --baseline PATH`` or
``pytest --naa-baseline PATH`` (the options win). It must answer the same question as the audit
now: the same model layout, the same member and non-member samples, the same attack settings and
the same inputs to the attacks (conditioning, prompt, captions, ``data.fit``:
:mod:`naa_guard.verdict.fingerprint`); otherwise it is an error that names every key that differs.

Before anything is scored, the baseline is read and checked: it must not be a file this run
writes (each run would overwrite its own baseline), every figure it states must lie in range
(``0 <= ci_low <= value <= ci_high <= 1`` for the AUC) and be what its stored per-sample scores
give when recomputed (a hand-edited interval hides a regression).

The rule, per AUC and TPR gate of each attack, with ``thresholds.max_increase = m``: the change
``now - baseline`` is measured on the same samples and, for its interval, on the same bootstrap
resamples (the paired difference: how hard each image is cancels out), each side in its own
leak direction. Under ``decision: point`` a gate regresses when the point change exceeds ``m``;
under ``upper_ci`` when the upper end of the change's interval does (a PASS then certifies that
the leak rose by at most ``m``). A regressed gate fails even within its absolute limit. The
epsilon gate has no interval and a different scale, so it is not compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.errors import BaselineError, NaaGuardError, PolicyError
from naa_guard.userfiles import non_regular_kind
from naa_guard.verdict.gates import GATE_LABELS
from naa_guard.verdict.leakage import evaluate, paired_bootstrap
from naa_guard.verdict.metrics import FPR_LEVELS
from naa_guard.verdict.wording import percent

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.verdict.gates import GateResult
    from naa_guard.verdict.leakage import ScoredAttack

COMPARED_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")
_ABSENT = object()
RECOMPUTE_TOLERANCE = 1e-9  # the same scores, seed and resamples give the same figures up to float rounding
FINGERPRINT_LABELS = {
    "model_layout": "model layout", "members": "member sample set", "nonmembers": "non-member sample set",
    "attack_settings": "attack settings", "inputs": "attack inputs",
}  # fmt: skip


def baseline_path(policy: Policy, override: Path | None, outputs: tuple[Path | None, ...] = ()) -> Path | None:
    """Return the baseline to compare with (the option wins over the policy); refuse max_increase without one.

    ``outputs`` are the files this run writes (report.json of report.dir, --json, ...): a baseline
    that is one of them would be overwritten by the run it gates, so it is refused.
    """
    chosen = override if override is not None else policy.baseline
    if chosen is None and policy.thresholds.max_increase is not None:
        raise PolicyError(
            f"{policy.source or policy.name}: thresholds.max_increase is set but no baseline report was given, so the "
            f"regression gate cannot be computed. Set baseline: PATH in the policy (or --baseline / --naa-baseline), "
            f"or set thresholds.max_increase: null for a first release."
        )
    written = [path for path in (*outputs, policy.report.dir / "report.json" if policy.report.dir else None) if path is not None]
    if chosen is not None and any(Path(chosen).resolve() == Path(path).resolve() for path in written):
        raise BaselineError(
            f"baseline {chosen} is the report this run writes (report.dir / --json / --naa-report), so each run would overwrite "
            f"its own baseline and compare with itself next time. Fix: copy the released report elsewhere (e.g. "
            f"baselines/v1.json) and point baseline / --baseline there, or write this run's report to another folder."
        )
    return chosen


def load_baseline(path: Path) -> dict[str, Any]:
    """Return a baseline report.json, checked to carry fingerprints, in-range figures and the scores they recompute from."""
    kind = non_regular_kind(path)
    if kind is not None:  # a pipe would block the read forever
        raise BaselineError(f"baseline {path} is {kind}, not a regular file. Point baseline / --baseline / --naa-baseline at the report.json of a previous audit.")
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
    for attack in report["attacks"]:
        _check_recomputes(report, attack, Path(path))
    return report


def _stored_scores(report: dict[str, Any], attack: str, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return role -> (source indices, scores) as the baseline stored them."""
    try:
        stored = report["attacks"][attack]["scores"]
        sides = {role: (np.asarray(stored[role]["index"], dtype=np.int64), np.asarray(stored[role]["score"], dtype=np.float64)) for role in ("members", "nonmembers")}
    except (KeyError, TypeError, ValueError):
        raise BaselineError(
            f"baseline {path}: {attack} has no per-sample scores (attacks.{attack}.scores), so its figures cannot be checked or "
            f"compared sample by sample. Re-run the baseline audit with this naa-guard version."
        ) from None
    for role, (indices, scores) in sides.items():
        if indices.shape != scores.shape or indices.ndim != 1 or len(set(indices.tolist())) != len(indices) or not np.all(np.isfinite(scores)):
            raise BaselineError(f"baseline {path}: {attack} {role} scores are malformed (indices and scores of unequal length, repeated indices or non-finite scores).")
    return sides


def _check_recomputes(report: dict[str, Any], attack: str, path: Path) -> None:
    """Return None; raise BaselineError unless the attack's stored figures are in range and recompute from its stored scores."""
    sides = _stored_scores(report, attack, path)
    try:
        metrics = report["attacks"][attack]["metrics"]
        confidence, n_bootstrap, seed = float(metrics["confidence"]), int(metrics["n_bootstrap"]), int(metrics["seed"])
    except (KeyError, TypeError, ValueError):
        raise BaselineError(f"baseline {path}: {attack} lacks its metrics' confidence, n_bootstrap or seed. Re-run the baseline audit with this naa-guard version.") from None
    for metric in COMPARED_METRICS:
        value, ci = _metric(report, attack, metric, path)
        ordered = ci[0] <= value <= ci[1] if metric == "auc" else ci[0] <= ci[1]
        if not (0.0 <= ci[0] and ci[1] <= 1.0 and 0.0 <= value <= 1.0 and ordered):
            raise BaselineError(
                f"baseline {path}: {attack} {GATE_LABELS[metric]} {value} with CI [{ci[0]}, {ci[1]}] is out of range "
                f"(expected 0 <= ci_low <= value <= ci_high <= 1): the file was edited or damaged. Use the report.json the audit wrote."
            )
    try:
        again = evaluate(sides["members"][1], sides["nonmembers"][1], confidence=confidence, n_bootstrap=n_bootstrap, seed=seed)
    except (NaaGuardError, ValueError) as exc:
        raise BaselineError(f"baseline {path}: {attack}'s stored scores cannot be evaluated ({exc}).") from None
    for metric in COMPARED_METRICS:
        value, ci = _metric(report, attack, metric, path)
        measured = again.metrics[metric]
        if not all(math.isclose(a, b, rel_tol=0.0, abs_tol=RECOMPUTE_TOLERANCE) for a, b in zip((value, *ci), (measured.value, *measured.ci))):
            raise BaselineError(
                f"baseline {path}: {attack} {GATE_LABELS[metric]} is stored as {value:.6f} (CI {ci[0]:.6f}-{ci[1]:.6f}) but its stored "
                f"scores give {measured.value:.6f} (CI {measured.ci[0]:.6f}-{measured.ci[1]:.6f}): the figures were edited or the "
                f"scores damaged. Use the report.json the audit wrote."
            )


def _section_differences(name: str, then: Any, now: dict[str, Any]) -> list[str]:
    if isinstance(then, dict) and then.get("digest") == now.get("digest"):
        return []
    then = then if isinstance(then, dict) else {}
    before, after = _flatten(then), _flatten(now)
    details = [f"{key}: {before[key]!r} (baseline) vs {value!r} (now)" if key in before else f"{key}: absent (baseline) vs {value!r} (now)" for key, value in after.items() if before.get(key, _ABSENT) != value]
    details += [f"{key}: {value!r} (baseline) vs absent (now)" for key, value in before.items() if key not in after]
    return [f"{name} differs" + (f" ({'; '.join(details)})" if details else f" (same summary, different content: digest {str(then.get('digest'))[:12]} vs {now['digest'][:12]})")]


def _flatten(section: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return the readable keys of a fingerprint section, nested ones dotted (unet.sample_size), the digest left out."""
    flat: dict[str, Any] = {}
    for key, value in section.items():
        if key == "digest" and not prefix:
            continue
        if isinstance(value, dict) and key != "attacks":  # attack parameters read best as one mapping
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fingerprint_differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Return one line per fingerprint section that differs between a baseline and this audit, naming each differing key."""
    differences = []
    for key, label in FINGERPRINT_LABELS.items():
        differences += _section_differences(label, then.get(key), now[key])
    return differences


def check_fingerprint(report: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    """Return None; raise BaselineError listing every difference when the baseline measured something else."""
    differences = fingerprint_differences(report["fingerprint"], fingerprint)
    if differences:
        raise BaselineError(
            f"baseline {path} does not measure the same thing as this audit, so no regression can be computed:\n"
            + "\n".join(f"  - {line}" for line in differences)
            + "\nCompare with a baseline of the same model layout, samples, attack settings and inputs, or drop baseline / --baseline."
        )


def _metric(report: dict[str, Any], attack: str, metric: str, path: Path) -> tuple[float, tuple[float, float]]:
    try:
        entry = report["attacks"][attack]["metrics"]["metrics"][metric]
        value, ci = float(entry["value"]), (float(entry["ci"][0]), float(entry["ci"][1]))
    except (KeyError, TypeError, ValueError, IndexError):
        raise BaselineError(f"baseline {path}: no {attack} {GATE_LABELS[metric]} value with a CI in it. Re-run the baseline audit with this naa-guard version.") from None
    if not all(math.isfinite(x) for x in (value, *ci)):
        raise BaselineError(f"baseline {path}: {attack} {GATE_LABELS[metric]} is not a finite number ({value}, CI {ci}).")
    return value, ci


def _paired(report: dict[str, Any], result: ScoredAttack, path: Path) -> tuple[tuple[np.ndarray, np.ndarray], Any]:
    """Return the baseline's (member, non-member) scores in this audit's sample order, and its recomputed leakage."""
    stored = _stored_scores(report, result.name, path)
    now_indices = {role: indices for role, (indices, _, _) in result.per_sample().items()}
    ordered = []
    for role in ("members", "nonmembers"):
        indices, scores = stored[role]
        by_index = dict(zip(indices.tolist(), scores.tolist()))
        wanted = now_indices[role].tolist()
        if set(wanted) != set(by_index):
            raise BaselineError(f"baseline {path}: {result.name} scored other {role} than this audit (sample indices differ), so no paired comparison is possible.")
        ordered.append(np.array([by_index[i] for i in wanted]))
    metrics = report["attacks"][result.name]["metrics"]
    return (ordered[0], ordered[1]), evaluate(ordered[0], ordered[1], confidence=float(metrics["confidence"]), n_bootstrap=int(metrics["n_bootstrap"]), seed=int(metrics["seed"]))


def compare(
    gates: list[GateResult], results: dict[str, ScoredAttack], report: dict[str, Any], path: Path, max_increase: float | None, *,
    decision: str, confidence: float, seed: int,
) -> list[GateResult]:  # fmt: skip
    """Return the gates with the paired baseline comparison attached, regressed ones failed."""
    compared, paired = [], {}
    for gate in gates:
        if gate.metric not in COMPARED_METRICS or gate.attack not in results:
            compared.append(gate)
            continue
        result = results[gate.attack]
        if gate.attack not in paired:
            then_scores, then_leakage = _paired(report, result, path)
            boots = paired_bootstrap((result.member_scores, result.nonmember_scores), then_scores, n_bootstrap=result.leakage.n_bootstrap, seed=seed)
            paired[gate.attack] = (then_leakage, boots)
        then_leakage, (now_boot, then_boot) = paired[gate.attack]
        then = then_leakage.metrics[gate.metric]
        key = "auc" if gate.metric == "auc" else f"tpr@{FPR_LEVELS[gate.metric]!r}"
        difference = now_boot[gate.direction][key] - then_boot[then.direction][key]
        tail = (1.0 - confidence) / 2.0 * 100.0
        low, high = (float(x) for x in np.percentile(difference, [tail, 100.0 - tail]))
        change = gate.value - then.value
        gated = high if decision == "upper_ci" else change
        regressed = max_increase is not None and not gated <= max_increase  # a NaN change regresses: fail closed
        record = {
            "report": str(path), "value": then.value, "ci": list(then.ci), "now": gate.value, "change": change,
            "change_ci": [low, high], "decision": decision, "gated_change": gated,
            "beyond_overlap": gate.ci[0] - then.ci[1], "max_increase": max_increase, "regressed": regressed,
        }  # fmt: skip
        if regressed and gate.status != "error":
            label, what = GATE_LABELS[gate.metric], "upper end of the change's interval" if decision == "upper_ci" else "change (point estimate)"
            message = (
                f"{gate.attack} {label} rose from {then.value:.3f} (baseline, CI {then.ci[0]:.3f}-{then.ci[1]:.3f}) to {gate.value:.3f} "
                f"(now, CI {gate.ci[0]:.3f}-{gate.ci[1]:.3f}) on the same samples: change {change:+.3f} (paired {percent(confidence)} CI "
                f"{low:+.3f} to {high:+.3f}); the {what} {gated:+.3f} exceeds thresholds.max_increase {max_increase:.3f}\n"
                f"baseline: {path}\n{gate.message}"
            )
            gate = replace(gate, status="fail", message=message)
        compared.append(replace(gate, baseline=record))
    return compared
