"""The rows every report shows (gate table, worst case, tuning, epsilon, regression), built once
and rendered by the terminal table, the Markdown and the HTML report alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from naa_guard.verdict.wording import percent

if TYPE_CHECKING:
    from naa_guard.result import AttackResult, AuditResult
    from naa_guard.tuning import TuningResult
    from naa_guard.verdict.gates import GateResult


VERDICTS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}


METRIC_LABELS = {"auc": "leak AUC", "tpr_at_1pct_fpr": "TPR@1%FPR", "tpr_at_0_1pct_fpr": "TPR@0.1%FPR", "asr": "ASR (oracle)"}


def point_note(metric: str, decision: str, ci_high: float, limit: float, confidence: float | None = None) -> str | None:
    """Return what a PASS under ``decision: point`` rests on: the point estimate, and the interval's upper end.

    None for ``decision: upper_ci`` and for the epsilon gate (a confidence bound itself). Every
    face (terminal table, pytest summary, report.md, report.html) shows it beside PASS.
    """
    if decision != "point" or metric == "epsilon_lb":
        return None
    level = f" {percent(confidence)}" if confidence is not None else ""
    above = ", above the limit: not certified" if ci_high > limit else ""
    return f"point estimate; upper{level} CI bound {ci_high:.3f}{above}"


def verdict_cell(word: str, note: str | None) -> str:
    """Return a gate's verdict as shown: PASS under decision: point carries its note, e.g. ``PASS (point estimate; ...)``."""
    return f"{word} ({note})" if word == "PASS" and note else word


def confidence_of(result: AuditResult) -> float:
    """Return the confidence level of the audit's intervals (the policy's thresholds.confidence)."""
    return next((attack.leakage.confidence for attack in result.attacks.values()), 0.95)


def table_rows(result: AuditResult) -> list[list[str]]:
    """Return one row per gate: attack, metric, value, CI, limit, verdict (a PASS on a point estimate says so)."""
    rows = []
    for gate in result.gates:
        ci = "(a lower bound)" if gate.metric == "epsilon_lb" else f"{gate.ci[0]:.3f}-{gate.ci[1]:.3f}"
        note = point_note(gate.metric, gate.decision, gate.ci[1], gate.limit, confidence_of(result))
        rows.append([gate.attack, gate.label, f"{gate.value:.3f}", ci, f"{gate.limit:.3f}", verdict_cell(VERDICTS[gate.status], note)])
    return rows


def table_header(result: AuditResult) -> list[str]:
    """Return the gate table's header; the CI column names the policy's confidence level."""
    return ["attack", "metric", "value", f"{percent(confidence_of(result))} CI", "limit", "verdict"]


def worst_case_rows(result: AuditResult) -> list[list[str]]:
    """Return one row per metric: the metric, the attack that leaks most on it, value, CI, direction."""
    return [
        [
            METRIC_LABELS[metric], worst["attack"], f"{worst['value']:.3f}", f"{worst['ci'][0]:.3f}-{worst['ci'][1]:.3f}",
            worst["direction"] + ("" if worst["resolvable"] else " (not resolvable: too few non-members)"),
        ]
        for metric, worst in result.worst_case().items()
    ]


def tuning_summary(tuning: TuningResult) -> str:
    """Return one line saying on which calibration split a tuned attack chose its setting."""
    return (
        f"tuned on a {tuning.fraction:.0%} calibration split ({tuning.n_members} members / "
        f"{tuning.n_nonmembers} non-members, never gated) on {tuning.scores} scores; candidates:"
    )


def candidate_rows(tuning: TuningResult) -> list[tuple[str, str]]:
    """Return (setting, its calibration leak AUC) per candidate, the chosen one marked."""
    rows = []
    for i, candidate in enumerate(tuning.candidates):
        setting = ", ".join(f"{key}={value}" for key, value in candidate.params.items())
        mark = "  <- chosen" if i == tuning.chosen else ""
        if i in tuning.tied:  # a tie on calibration, settled by the leak on the evaluation part (naa_guard.tuning)
            mark = f", tied: evaluation leak AUC {tuning.tie_evaluation[tuning.tied.index(i)]:.3f}{mark}"
        rows.append((setting, f"leak AUC {candidate.leak_auc:.3f} ({candidate.direction}){mark}"))
    return rows


def epsilon_line(name: str, attack: AttackResult) -> str | None:
    """Return one line with an attack's epsilon lower bound and how it was obtained (None: not computed)."""
    bound = attack.epsilon
    if bound is None:
        return None
    method = f"delta {bound.delta:g}, {percent(bound.confidence)} one-sided Clopper-Pearson, Bonferroni over {bound.tests} thresholds"
    if bound.value == 0.0:
        return f"{name}: epsilon lower bound 0.000: no threshold shows evidence beyond sampling noise ({method})"
    return f"{name}: epsilon lower bound {bound.value:.3f} ({method}; at FPR {bound.fpr:.3f} / FNR {bound.fnr:.3f}, {bound.direction})"


def regression_rows(result: AuditResult) -> list[list[str]]:
    """Return attack, metric, baseline, now, change, its paired CI, the change gated, verdict per gate compared with a baseline."""
    rows = []
    for gate in result.gates:
        if gate.baseline is not None:
            record = gate.baseline
            verdict = "REGRESSED" if record["regressed"] else ("ok" if record["max_increase"] is not None else "not gated (max_increase: null)")
            low, high = record["change_ci"]
            rows.append([
                gate.attack, gate.label, f"{record['value']:.3f}", f"{record['now']:.3f}", f"{record['change']:+.3f}",
                f"{low:+.3f} to {high:+.3f}", f"{record['gated_change']:+.3f} ({record['decision']})", verdict,
            ])  # fmt: skip
    return rows


REGRESSION_HEADER = ["attack", "metric", "baseline", "now", "change", "paired CI of the change", "gated change", "regression"]
REGRESSION_RULE = (
    "paired comparison on the same samples and bootstrap resamples: regressed when the gated change (decision upper_ci: "
    "the upper end of the paired interval of now - baseline; point: the change itself) exceeds thresholds.max_increase"
)


EXPOSED_HEADER = ["rank", "member", "score", "empirical FPR"]


def split_note(result: AuditResult) -> str:
    tuned = any(attack.tuning is not None for attack in result.attacks.values())
    return ", the evaluation split (tuned attacks chose their setting on the rest)" if tuned else ""


def align_columns(rows: list[list[str]]) -> list[str]:
    """Return the rows as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def verdict_word(result: AuditResult) -> str:
    """Return the audit's verdict in one word: PASS, ERROR, FAIL, or NOT CERTIFIED (every failed estimate within its limit, an interval not)."""
    if result.passed:
        return "PASS"
    if result.errored or not result.gates:
        return "ERROR"
    failed = [gate for gate in result.gates if gate.status == "fail"]
    return "NOT CERTIFIED" if failed and not any(_leaks(gate) for gate in failed) else "FAIL"


def _leaks(gate: GateResult) -> bool:
    """Return True when a failed gate's estimate itself is beyond the limit (NaN: not within), or it regressed against the baseline."""
    return not gate.value <= gate.limit or bool((gate.baseline or {}).get("regressed"))


def verdict_sentence(result: AuditResult) -> str:
    """Return the audit's verdict as a sentence that says no more than the gates do."""
    word, level = verdict_word(result), f"{percent(confidence_of(result))}"
    if word == "PASS":
        point = [gate for gate in result.gates if point_note(gate.metric, gate.decision, gate.ci[1], gate.limit) is not None]
        if not point:
            return "PASSED"
        above = [gate for gate in point if gate.ci[1] > gate.limit]
        if above:
            return f"PASSED on point estimates (decision: point): every estimate is within its limit, but the upper {level} CI bound of {len(above)} gate(s) is above it: not certified at {level} confidence"
        return f"PASSED on point estimates (decision: point); every upper {level} CI bound is within its limit too"
    if word == "ERROR":
        return "ERROR: some gates cannot be decided"
    failed = [gate for gate in result.gates if gate.status == "fail"]
    uncertified = [gate for gate in failed if not _leaks(gate)]
    if word == "NOT CERTIFIED":
        return (
            f"NOT CERTIFIED: every estimate is within the policy's limits, but the upper {level} CI bound of "
            f"{len(uncertified)} gate(s) is above its limit, so the audit cannot certify the model at {level} confidence (more samples may settle it)"
        )
    exceeded = [gate for gate in failed if not gate.value <= gate.limit]
    regressed = [gate for gate in failed if (gate.baseline or {}).get("regressed")]
    parts = [f"{len(exceeded)} gate(s) above their limit"] if exceeded else []
    parts += [f"{len(regressed)} gate(s) rose beyond thresholds.max_increase since the baseline"] if regressed else []
    more = f"; {len(uncertified)} more NOT CERTIFIED (estimate within the limit, interval above it)" if uncertified else ""
    return f"FAILED: the model leaks membership beyond the policy's limits ({'; '.join(parts)}){more}"


def model_lines(result: AuditResult) -> list[str]:
    """Return what was audited, from the report's fingerprint: the layout (a flow model's parametrization and prompt
    settings included), the precision variant and where each component's weights came from (a single file)."""
    layout = (result.fingerprint or {}).get("model_layout") or {}
    lines = [f"model: {layout['summary']}"] if layout.get("summary") else []
    if layout.get("variant"):
        lines.append(f"weights: the {layout['variant']} precision variant's files (model.variant)")
    if isinstance(layout.get("weights"), dict):
        lines.append("weights from: " + "; ".join(f"{name}: {source}" for name, source in layout["weights"].items()))
    return lines
