"""The terminal table: one line per gate, then the worst case, the checks and the warnings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from naa_guard.reports.rows import (
    EXPOSED_HEADER,
    REGRESSION_HEADER,
    align_columns,
    candidate_rows,
    epsilon_line,
    regression_rows,
    split_note,
    table_header,
    table_rows,
    tuning_summary,
    verdict_sentence,
    worst_case_rows,
)

if TYPE_CHECKING:
    from naa_guard.result import AuditResult


def format_table(result: AuditResult) -> str:
    """Return the gate table as aligned plain text, with a one-line summary underneath."""
    rows = [table_header(result), *table_rows(result)]
    rule = ["-" * max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = align_columns([rows[0], rule, *rows[1:]])
    lines.append("")
    lines.append(f"{result.name}: {result.n_members} members / {result.n_nonmembers} non-members" + (f" (limit {result.limit} per side)" if result.limit else "") + split_note(result))
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
    lines.append(f"verdict: {verdict_sentence(result)}")
    return "\n".join(lines)
