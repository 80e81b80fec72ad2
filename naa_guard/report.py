"""Reports of an audit: the terminal table, JSON and a Markdown summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naa_guard.audit import AuditResult

VERDICTS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}


def table_rows(result: AuditResult) -> list[list[str]]:
    """Return one row per gate: attack, metric, value, CI, limit, verdict."""
    rows = []
    for gate in result.gates:
        rows.append([gate.attack, gate.label, f"{gate.value:.3f}", f"{gate.ci[0]:.3f}-{gate.ci[1]:.3f}", f"{gate.limit:.3f}", VERDICTS[gate.status]])
    return rows


TABLE_HEADER = ["attack", "metric", "value", "95% CI", "limit", "verdict"]


def _header(result: AuditResult) -> list[str]:
    confidence = f"{round(100 * _confidence(result))}% CI"
    return [*TABLE_HEADER[:3], confidence, *TABLE_HEADER[4:]]


def _confidence(result: AuditResult) -> float:
    first = next(iter(result.attacks.values()), None)
    return first.leakage.confidence if first is not None else 0.95


def format_table(result: AuditResult) -> str:
    """Return the gate table as aligned plain text, with a one-line summary underneath."""
    rows = [_header(result), *table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"{result.name}: {result.n_members} members / {result.n_nonmembers} non-members" + (f" (limit {result.limit} per side)" if result.limit else ""))
    for name, attack in result.attacks.items():
        leakage = attack.leakage
        lines.append(
            f"  {name}: AUC {leakage.auc:.3f} (leak AUC {leakage.leak_auc:.3f}, {leakage.direction}), "
            f"ASR {leakage.metrics['asr'].value:.3f} (best-threshold oracle), {attack.queries_per_sample} queries/sample, "
            f"{attack.seconds:.1f}s{' (cached scores)' if attack.cached else ''}"
        )
    for line in result.checks.summary_lines() if result.checks is not None else []:
        lines.append(f"  {line}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    verdict = "PASSED" if result.passed else ("ERROR: some gates cannot be decided" if result.errored else "FAILED: the model leaks membership beyond the policy's limits")
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def to_markdown(result: AuditResult) -> str:
    """Return a Markdown summary: the gate table and one line per attack."""
    header = _header(result)
    lines = [f"### naa-guard: {result.name} — {'PASS' if result.passed else 'FAIL'}", ""]
    lines.append(f"{result.n_members} members / {result.n_nonmembers} non-members" + (f", limit {result.limit} per side" if result.limit else ""))
    lines.append("")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in table_rows(result):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for name, attack in result.attacks.items():
        leakage = attack.leakage
        lines.append(f"- **{name}**: AUC {leakage.auc:.3f}, leak AUC {leakage.leak_auc:.3f} ({leakage.direction}), {attack.queries_per_sample} queries/sample, params `{json.dumps(attack.params)}`")
    for line in result.checks.summary_lines() if result.checks is not None else []:
        lines.append(f"- {line}")
    for warning in result.warnings:
        lines.append(f"- warning: {warning}")
    return "\n".join(lines) + "\n"


def write_reports(result: AuditResult, directory: Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json`` and ``report.md`` into ``directory``; return the paths written.

    Unless ``plots`` is False, also the log-log ROC plot ``roc.png`` and one ``scores_<attack>.png`` histogram
    per attack (matplotlib is imported only then).
    """
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    markdown_path = directory / "report.md"
    markdown_path.write_text(to_markdown(result), encoding="utf-8")
    written = [json_path, markdown_path]
    if plots:
        from naa_guard.plots import write_plots

        written += write_plots(result, directory)
    return written
