"""The rows every report shows (gate table, worst case, tuning, epsilon, regression), built once
and rendered by the terminal table, the Markdown and the HTML report alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naa_guard.result import AttackResult, AuditResult
    from naa_guard.tuning import TuningResult


VERDICTS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}


METRIC_LABELS = {"auc": "leak AUC", "tpr_at_1pct_fpr": "TPR@1%FPR", "tpr_at_0_1pct_fpr": "TPR@0.1%FPR", "asr": "ASR (oracle)"}


def table_rows(result: AuditResult) -> list[list[str]]:
    """Return one row per gate: attack, metric, value, CI, limit, verdict."""
    rows = []
    for gate in result.gates:
        ci = "(a lower bound)" if gate.metric == "epsilon_lb" else f"{gate.ci[0]:.3f}-{gate.ci[1]:.3f}"
        rows.append([gate.attack, gate.label, f"{gate.value:.3f}", ci, f"{gate.limit:.3f}", VERDICTS[gate.status]])
    return rows


def table_header(result: AuditResult) -> list[str]:
    """Return the gate table's header; the CI column names the policy's confidence level."""
    confidence = next((attack.leakage.confidence for attack in result.attacks.values()), 0.95)
    return ["attack", "metric", "value", f"{round(100 * confidence)}% CI", "limit", "verdict"]


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
    method = f"delta {bound.delta:g}, {bound.confidence:.0%} one-sided Clopper-Pearson, Bonferroni over {bound.tests} thresholds"
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
