"""The end-of-run report: a table of every gate, in the terminal and in ``$GITHUB_STEP_SUMMARY``.

Rows are built from test reports and their ``user_properties``, not from audit results: under
pytest-xdist the audits run in the workers and only the reports reach the controller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from naa_guard.reports.rows import point_note, verdict_cell
from pytest_plugin.collect import GATE_IDS
from pytest_plugin.session import quick_note

HEADER = ("policy", "attack", "gate", "value", "CI", "limit", "verdict")
VERDICT_ORDER = ("FAIL", "ERROR", "SKIP", "PASS")  # the run's verdict is the first one present
# A skipped gate certified nothing: every table and summary says so in these words, in every mode.
NOT_VERIFIED = "NOT VERIFIED"
SHOWN = {"SKIP": f"{NOT_VERIFIED} (skipped)"}


@dataclass(frozen=True)
class GateRow:
    """One gate's outcome and its measured properties."""

    nodeid: str
    properties: dict[str, Any]
    verdict: str  # PASS, FAIL, ERROR or SKIP
    reason: str = ""  # why an ERROR or SKIP gate has no verdict: the first line of its message
    warnings: tuple[str, ...] = ()  # the audit's warnings (the item's ``warning`` properties)

    def order(self) -> tuple[str, str, int]:
        """Return the sort key: policy, attack, then gates in the policy's order (auc first)."""
        metric = str(self.properties["metric"])
        rank = list(GATE_IDS).index(metric) if metric in GATE_IDS else len(GATE_IDS)
        return str(self.properties["policy"]), str(self.properties["attack"]), rank

    def cells(self) -> tuple[str, ...]:
        """Return the row's table cells; a gate that never got a measurement shows dashes."""
        props = self.properties
        measured = "value" in props
        value = f"{float(props['value']):.3f}" if measured else "-"
        ci = f"{float(props['ci_low']):.3f}-{float(props['ci_high']):.3f}" if measured else "-"
        if measured and props["metric"] == "epsilon_lb":
            ci = "(lower bound)"  # a confidence bound itself: no interval around it
        gate = GATE_IDS.get(str(props["metric"]), str(props["metric"]))
        return (str(props["policy"]), str(props["attack"]), gate, value, ci, f"{float(props['limit']):.3f}", verdict_cell(SHOWN.get(self.verdict, self.verdict), self.point_note()))

    def within_limit(self) -> bool:
        """Return True when the gate's estimate is within its limit and it did not regress (a FAIL then only means NOT CERTIFIED)."""
        return str(self.properties.get("within_limit", False)).lower() == "true"

    def point_note(self) -> str | None:
        """Return what a PASS under decision: point rests on (the estimate, the interval's upper end), as the CLI's table says it."""
        props = self.properties
        if "ci_high" not in props or "decision" not in props:
            return None
        confidence = float(props["confidence"]) if "confidence" in props else None
        return point_note(str(props["metric"]), str(props["decision"]), float(props["ci_high"]), float(props["limit"]), confidence)


def _reason(report: pytest.TestReport) -> str:
    """Return the first line of a skip reason or setup error, shortened for a table note."""
    text = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.removeprefix("Skipped: ").removeprefix("naa-guard: ")
    return first if len(first) <= 160 else first[:157] + "..."


def _verdict(report: pytest.TestReport) -> str | None:
    """Return the gate verdict a report settles, or None when a later phase will."""
    if report.when == "setup":
        return {"failed": "ERROR", "skipped": "SKIP"}.get(report.outcome)
    if report.when == "call":
        return {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}.get(report.outcome)
    return None


class GateSummary:
    """Collects gate outcomes during the run and renders them at the end."""

    def __init__(self) -> None:
        self.rows: dict[str, GateRow] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Remember the outcome of a gate item's report; other tests' reports are ignored."""
        properties = {str(key): value for key, value in report.user_properties}
        verdict = _verdict(report)
        if "naa_guard" in properties and verdict is not None:
            reason = _reason(report) if verdict in ("ERROR", "SKIP") else ""
            warnings = tuple(str(value) for key, value in report.user_properties if key == "warning")
            self.rows[report.nodeid] = GateRow(report.nodeid, properties, verdict, reason, warnings)

    def ordered(self) -> list[GateRow]:
        """Return the rows in a stable order (xdist reports arrive in any order)."""
        return sorted(self.rows.values(), key=GateRow.order)

    def verdict(self) -> str:
        """Return the run's overall verdict: FAIL, ERROR, SKIP or PASS."""
        present = {row.verdict for row in self.rows.values()}
        return next(verdict for verdict in VERDICT_ORDER if verdict in present)

    def run_verdict(self) -> str:
        """Return the run's verdict as shown: a run whose worst outcome is a skip is NOT VERIFIED, not PASS; a PASS on point estimates says so."""
        verdict = self.verdict()
        if verdict == "SKIP":
            return f"{NOT_VERIFIED} (gates skipped)"
        point = [note for row in self.rows.values() if row.verdict == "PASS" and (note := row.point_note())]
        failed = [row for row in self.rows.values() if row.verdict == "FAIL"]
        if verdict == "FAIL" and all(row.within_limit() for row in failed):  # as the CLI says it
            return "NOT CERTIFIED (every failed estimate is within its limit, its upper CI bound is not)"
        if verdict == "PASS" and point:
            above = sum("not certified" in note for note in point)
            return "PASS on point estimates (decision: point)" + (f"; {above} gate(s) not certified: upper CI bound above the limit" if above else "; every upper CI bound within its limit too")
        return verdict

    def not_verified_lines(self) -> list[str]:
        """Return one line per skipped gate: it certifies nothing, whatever the exit code."""
        return [f"{NOT_VERIFIED}: {row.nodeid} was skipped: {row.reason}" for row in self.ordered() if row.verdict == "SKIP"]

    def policy_notes(self) -> list[str]:
        """Return one line per policy: sample counts, where the scores came from, quick mode, report."""
        notes: dict[str, str] = {}
        for row in self.ordered():
            props = row.properties
            policy = str(props["policy"])
            if "n_members" not in props:
                notes.setdefault(policy, f"{policy}: not measured: {row.reason}")
                continue
            loaded = str(props["model_loaded"]).lower() == "true"
            scores = "cached scores, model not loaded" if props["scores"] == "cached" and not loaded else "scores computed, model loaded"
            parts = [f"{policy}: {props['n_members']} members / {props['n_nonmembers']} non-members", scores]
            if "report" in props:
                parts.append(f"report: {props['report']}")
            note = "; ".join(parts) + (f" {quick_note(int(props['quick']))}" if "quick" in props else "")
            notes[policy] = note
        return list(notes.values())

    def warning_lines(self) -> list[str]:
        """Return the audits' warnings, once per policy: what the CLI prints under its table."""
        lines: dict[str, None] = {}
        for row in self.ordered():
            lines.update((f"{row.properties['policy']}: warning: {text}", None) for text in row.warnings)
        return list(lines)

    def table_lines(self) -> list[str]:
        """Return the gate table as aligned plain-text lines."""
        rows = [HEADER, *(row.cells() for row in self.ordered())]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return lines

    def write_terminal(self, terminal: Any) -> None:
        """Write the gate table and the policy notes to the terminal reporter."""
        if not self.rows:
            return
        terminal.write_sep("=", "naa-guard privacy gates")
        for line in [*self.table_lines(), *self.policy_notes(), *self.warning_lines(), *self.not_verified_lines(), f"naa-guard verdict: {self.run_verdict()}"]:
            terminal.write_line(line)

    def to_markdown(self) -> str:
        """Return the gate table as Markdown, for a CI job summary."""
        lines = [f"### naa-guard privacy gates: {self.run_verdict()}", ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|" + "|".join("---" for _ in HEADER) + "|")
        lines += ["| " + " | ".join(row.cells()) + " |" for row in self.ordered()]
        lines.append("")
        lines += [f"- {note}" for note in self.policy_notes()]
        lines += [f"- {line}" for line in self.warning_lines()]
        lines += [f"- **{line}**" for line in self.not_verified_lines()]
        return "\n".join(lines) + "\n"

    def append_step_summary(self) -> Path | None:
        """Append the Markdown table to ``$GITHUB_STEP_SUMMARY`` when set; return the file written."""
        target = os.environ.get("GITHUB_STEP_SUMMARY")
        if not target or not self.rows:
            return None
        with open(target, "a", encoding="utf-8") as stream:
            stream.write(self.to_markdown() + "\n")
        return Path(target)


GATE_SUMMARY = pytest.StashKey[GateSummary]()
