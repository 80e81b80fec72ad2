"""Reports of an audit: the terminal table, JSON and a Markdown summary."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naa_guard.audit import AttackResult, AuditResult
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
        f"{tuning.n_nonmembers} non-members, never gated); candidates:"
    )


def candidate_rows(tuning: TuningResult) -> list[tuple[str, str]]:
    """Return (setting, its calibration leak AUC) per candidate, the chosen one marked."""
    rows = []
    for i, candidate in enumerate(tuning.candidates):
        setting = ", ".join(f"{key}={value}" for key, value in candidate.params.items())
        mark = "  <- chosen" if i == tuning.chosen else ""
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
    """Return attack, metric, baseline, now, change, beyond-overlap, verdict per gate compared with a baseline."""
    rows = []
    for gate in result.gates:
        if gate.baseline is not None:
            record = gate.baseline
            verdict = "REGRESSED" if record["regressed"] else ("ok" if record["max_increase"] is not None else "not gated (max_increase: null)")
            rows.append([gate.attack, gate.label, f"{record['value']:.3f}", f"{record['now']:.3f}", f"{record['change']:+.3f}", f"{record['beyond_overlap']:+.3f}", verdict])
    return rows


REGRESSION_HEADER = ["attack", "metric", "baseline", "now", "change", "beyond CI overlap", "regression"]
EXPOSED_HEADER = ["rank", "member", "score", "empirical FPR"]


def _split_note(result: AuditResult) -> str:
    tuned = any(attack.tuning is not None for attack in result.attacks.values())
    return ", the evaluation split (tuned attacks chose their setting on the rest)" if tuned else ""


def align_columns(rows: list[list[str]]) -> list[str]:
    """Return the rows as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def format_table(result: AuditResult) -> str:
    """Return the gate table as aligned plain text, with a one-line summary underneath."""
    rows = [table_header(result), *table_rows(result)]
    rule = ["-" * max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = align_columns([rows[0], rule, *rows[1:]])
    lines.append("")
    lines.append(f"{result.name}: {result.n_members} members / {result.n_nonmembers} non-members" + (f" (limit {result.limit} per side)" if result.limit else "") + _split_note(result))
    if result.conditioning is not None:
        lines.append(f"  text conditioning: {result.conditioning}")
    for name, attack in result.attacks.items():
        leakage = attack.leakage
        lines.append(
            f"  {name}: AUC {leakage.auc:.3f} (leak AUC {leakage.leak_auc:.3f}, {leakage.direction}), "
            f"ASR {leakage.metrics['asr'].value:.3f} (best-threshold oracle), {attack.queries_per_sample} queries/sample, "
            f"{attack.seconds:.1f}s{' (cached scores)' if attack.cached else ''}"
        )
        if attack.tuning is not None:
            lines.append(f"    {tuning_summary(attack.tuning)}")
            lines.extend(f"      {setting}: {text}" for setting, text in candidate_rows(attack.tuning))
    if result.attacks:
        lines.append("worst case over attacks (the attack that leaks most, per metric):")
        lines.extend(f"  {line}" for line in align_columns(worst_case_rows(result)))
    lines.extend(f"  {line}" for name, attack in result.attacks.items() if (line := epsilon_line(name, attack)))
    if regression := regression_rows(result):
        lines.append(f"compared with the baseline {next(g.baseline['report'] for g in result.gates if g.baseline)}:")
        lines.extend(f"  {line}" for line in align_columns([REGRESSION_HEADER, *regression]))
    if result.exposed is not None:
        exposed = result.exposed
        lines.append(f"most-exposed members under {exposed.attack} (top 5 of {len(exposed.members)}; empirical FPR = share of non-members scoring higher):")
        lines.extend(f"  {line}" for line in align_columns([EXPOSED_HEADER, *exposed.table_rows()[:5]]))
    for line in result.checks.summary_lines() if result.checks is not None else []:
        lines.append(f"  {line}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    verdict = "PASSED" if result.passed else ("ERROR: some gates cannot be decided" if result.errored else "FAILED: the model leaks membership beyond the policy's limits")
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def to_markdown(result: AuditResult) -> str:
    """Return a Markdown summary: the gate table and one line per attack."""
    header = table_header(result)
    lines = [f"### naa-guard: {_md(result.name)} — {'PASS' if result.passed else 'FAIL'}", ""]
    lines.append(f"{result.n_members} members / {result.n_nonmembers} non-members" + (f", limit {result.limit} per side" if result.limit else "") + _split_note(result))
    if result.conditioning is not None:
        lines.append(f"text conditioning: {_md(result.conditioning)}")
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in table_rows(result):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for name, attack in result.attacks.items():
        leakage = attack.leakage
        lines.append(f"- **{name}**: AUC {leakage.auc:.3f}, leak AUC {leakage.leak_auc:.3f} ({leakage.direction}), {attack.queries_per_sample} queries/sample, params `{json.dumps(attack.params)}`")
        if attack.tuning is not None:
            lines.append(f"  - {tuning_summary(attack.tuning)}")
            lines.extend(f"    - `{setting}`: {text}" for setting, text in candidate_rows(attack.tuning))
    if result.attacks:
        lines += ["", "**Worst case** (the attack that leaks most, per metric):", "", "| metric | attack | value | CI | direction |", "|---|---|---|---|---|"]
        lines.extend("| " + " | ".join(row) + " |" for row in worst_case_rows(result))
        lines.append("")
    epsilon = [line for name, attack in result.attacks.items() if (line := epsilon_line(name, attack))]
    if epsilon:
        from naa_guard.epsilon import DISCLAIMER

        lines += ["**Empirical epsilon lower bound**", "", *(f"- {line}" for line in epsilon), f"- {DISCLAIMER}", ""]
    if regression := regression_rows(result):
        lines += [f"**Regression** against `{next(g.baseline['report'] for g in result.gates if g.baseline)}`:", ""]
        lines += [_markdown_row(REGRESSION_HEADER), "|" + "---|" * len(REGRESSION_HEADER), *(_markdown_row(row) for row in regression), ""]
    if result.exposed is not None:
        exposed = result.exposed
        lines += [f"**Most-exposed members** under {exposed.attack} ({exposed.direction}; empirical FPR = share of the {exposed.n_nonmembers} non-members scoring higher):", ""]
        lines += [_markdown_row(EXPOSED_HEADER), "|" + "---|" * len(EXPOSED_HEADER), *(_markdown_row(row) for row in exposed.table_rows()), ""]
    for line in result.checks.summary_lines() if result.checks is not None else []:
        lines.append(f"- {_md(line)}")
    for warning in result.warnings:
        lines.append(f"- warning: {_md(warning)}")
    return "\n".join(lines) + "\n"


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(_md(cell).replace("|", "\\|") for cell in cells) + " |"


def _md(text: str) -> str:
    """Return user-given text (file names, captions, prompts) with HTML escaped: Markdown viewers render raw HTML."""
    return escape(text, quote=False)


def write_reports(result: AuditResult, directory: Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``directory``; return the paths written.

    Unless ``plots`` is False, also the log-log ROC plot ``roc.png`` and one ``scores_<attack>.png`` histogram
    per attack (matplotlib is imported only then), and the HTML report inlines them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    markdown_path = directory / "report.md"
    markdown_path.write_text(to_markdown(result), encoding="utf-8")
    written = [json_path, markdown_path]
    figures = None
    if plots:
        from naa_guard.plots import write_plots

        drawn = write_plots(result, directory)  # roc.png, then scores_<attack>.png in attack order
        written += drawn
        figures = dict(zip(["roc", *result.attacks], (path.read_bytes() for path in drawn)))
    from naa_guard.html_report import write_html

    written.append(write_html(result, directory / "report.html", figures=figures))
    return written
