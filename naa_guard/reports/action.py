"""The reusable GitHub Action's logic (``action.yml`` at the repository root calls it).

``python -m naa_guard.reports.action --policies "policies/*.naa.yaml" --report-dir naa-report``
runs pytest on the policies (``--junitxml`` and ``--naa-report`` into the report folder; the
plugin writes the gate table into ``$GITHUB_STEP_SUMMARY``), reads back every report.json this
run wrote (checked: :func:`naa_guard.reports.readback.read_report`), appends the verdict to the
step summary and writes ``verdict=`` and ``worst-auc=`` to ``$GITHUB_OUTPUT``.

Fail closed: the verdict is PASS only when pytest passed and every report this run wrote checks
out and says PASS. A pytest failure without a failing report (a policy that errored before any
report, a collection error), a report that does not check out, no policy or no report at all:
ERROR. The exit code is pytest's when it failed, else 0 for PASS and 2 for anything else.
pytest runs as a subprocess: library code never imports it.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from naa_guard.errors import NaaGuardError
from naa_guard.reports.readback import read_report, verdict_word, worst_figures

SEVERITY = ("PASS", "NOT CERTIFIED", "FAIL", "ERROR")
JUNIT_NAME = "naa-junit.xml"


def expand_policies(text: str) -> tuple[list[str], list[str]]:
    """Return (the policy paths, the problems): each whitespace-separated word a path or a glob; a glob that matches nothing is a problem."""
    paths, problems = [], []
    for word in shlex.split(text):
        if glob.has_magic(word):
            matched = sorted(glob.glob(word, recursive=True))
            paths += matched
            problems += [] if matched else [f"policies: {word!r} matches no file"]
        else:
            paths.append(word)
    if not paths and not problems:
        problems.append("policies: no policy given")
    return paths, problems


def pytest_command(policies: list[str], report_dir: Path, baseline: str, extra_args: str) -> list[str]:
    """Return the pytest command line that gates the policies and writes the reports and the JUnit file into ``report_dir``."""
    command = [sys.executable, "-m", "pytest", *policies, f"--junitxml={report_dir / JUNIT_NAME}", "--naa-report", str(report_dir)]
    return command + (["--naa-baseline", baseline] if baseline else []) + shlex.split(extra_args)


def collect(report_dir: Path, since: float) -> tuple[dict[Path, dict], list[str]]:
    """Return the checked reports this run wrote under ``report_dir`` (older ones are ignored), and the problems met."""
    reports, problems = {}, []
    for path in sorted(report_dir.glob("*/report.json")):
        if path.stat().st_mtime < since:
            continue  # left by an earlier run: not this verdict
        try:
            reports[path] = read_report(path)
        except NaaGuardError as exc:
            problems.append(str(exc).splitlines()[0])
    return reports, problems


def decide(returncode: int, reports: dict[Path, dict], problems: list[str]) -> tuple[str, list[str]]:
    """Return the verdict of the run and why it is not simply the reports' own."""
    words = [verdict_word(report) for report in reports.values()]
    worst = max(words, key=SEVERITY.index) if words else "ERROR"
    why = list(problems) + ([] if reports else ["no report.json was written"])
    if returncode not in (0, 1):
        why.append(f"pytest exited {returncode} (interrupted, internal or usage error, or no test collected)")
    elif returncode == 0 and worst != "PASS":
        why.append(f"pytest passed but a report says {worst}")
    elif returncode == 1 and worst == "PASS":
        why.append("pytest failed but every report says PASS (a policy errored before its report, or another test failed)")
    return ("ERROR" if why else worst), why


def _append(variable: str, text: str) -> None:
    target = os.environ.get(variable)
    if target:
        with open(target, "a", encoding="utf-8") as stream:
            stream.write(text)


def run(policies_text: str, report_dir: Path, baseline: str = "", extra_args: str = "") -> int:
    """Gate the policies, write the step summary and the outputs; return the exit code."""
    report_dir = Path(report_dir)
    policies, problems = expand_policies(policies_text)
    returncode, reports = 2, {}
    if not problems:
        report_dir.mkdir(parents=True, exist_ok=True)
        since = time.time() - 2.0  # file times are coarse on some filesystems
        returncode = subprocess.call(pytest_command(policies, report_dir, baseline, extra_args))
        reports, more = collect(report_dir, since)
        problems += more
    verdict, why = decide(returncode, reports, problems)
    worst = max((figures["auc"] for figures in map(worst_figures, reports.values()) if "auc" in figures), default=None)
    worst_text = f"{worst:.6f}" if worst is not None else ""
    lines = [f"### naa-guard verdict: {verdict}", ""]
    lines += [f"- {path.parent.name}: {verdict_word(report)} ({path})" for path, report in reports.items()]
    lines += [f"- worst gated leak AUC: {worst_text}"] if worst_text else []
    lines += [f"- **ERROR: {reason}**" for reason in why]
    lines.append(f"- reports and JUnit file: `{report_dir}` (uploaded as an artifact)")
    summary = "\n".join(lines) + "\n\n"
    _append("GITHUB_STEP_SUMMARY", summary)
    _append("GITHUB_OUTPUT", f"verdict={verdict}\nworst-auc={worst_text}\nreport-dir={report_dir}\n")
    print(summary, end="")
    if returncode != 0:
        return returncode
    return 0 if verdict == "PASS" else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m naa_guard.reports.action", description="naa-guard's GitHub Action: gate policies, summarise, set outputs.")
    parser.add_argument("--policies", required=True, help="policy files, folders or globs, separated by whitespace")
    parser.add_argument("--report-dir", default="naa-report", help="folder for the per-policy reports and the JUnit file")
    parser.add_argument("--baseline", default="", help="a previous report.json (--naa-baseline)")
    parser.add_argument("--extra-args", default="", help="more pytest arguments, shell-quoted")
    args = parser.parse_args(argv)
    return run(args.policies, Path(args.report_dir), args.baseline, args.extra_args)


if __name__ == "__main__":
    sys.exit(main())
