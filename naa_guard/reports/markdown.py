"""The Markdown report (``report.md``): the terminal table's content, HTML in names and captions escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING

from naa_guard.reports.rows import EXPOSED_HEADER, REGRESSION_HEADER, candidate_rows, epsilon_line, model_lines, regression_rows, split_note, table_header, table_rows, tuning_summary, verdict_sentence, verdict_word, worst_case_rows

if TYPE_CHECKING:
    from naa_guard.result import AuditResult


def to_markdown(result: AuditResult) -> str:
    """Return a Markdown summary: the gate table and one line per attack."""
    header = table_header(result)
    lines = [f"### naa-guard: {_md(result.name)} — {verdict_word(result)}", "", f"verdict: {verdict_sentence(result)}", ""]
    lines.append(f"{result.n_members} members / {result.n_nonmembers} non-members" + (f", limit {result.limit} per side" if result.limit else "") + split_note(result))
    if result.conditioning is not None:
        lines.append(f"text conditioning: {_md(result.conditioning)}")
    lines.extend(_md(line) for line in model_lines(result))
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
        from naa_guard.verdict.epsilon import DISCLAIMER

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
