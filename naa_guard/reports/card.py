"""``naa-guard card REPORT.json [--card README.md]``: the audit's "Privacy audit" section in a model card.

The section sits between two HTML-comment markers, so writing it again replaces it; the card's
YAML metadata gets one key, ``naa_guard`` (version, verdict, worst gated figures, date). Nothing
else in the card is touched; the card is parsed and written with ``huggingface_hub``'s
``ModelCard`` (the ``[hub]`` extra), offline: a card that does not exist yet is created.

The section is built only from a report.json that checks out (:func:`naa_guard.reports.readback.read_report`):
exactly its gated rows and verdicts. The date is the report's own timestamp when it has one,
else the day report.json was last written, so writing the same report twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from naa_guard.errors import OutputError
from naa_guard.reports.readback import read_report, verdict_word, worst_figures
from naa_guard.reports.rows import METRIC_LABELS
from naa_guard.userfiles import non_regular_kind
from naa_guard.version import __version__
from naa_guard.verdict.wording import percent

START = "<!-- naa-guard:privacy-audit:start (written by `naa-guard card`; edits here are replaced) -->"
END = "<!-- naa-guard:privacy-audit:end -->"
METADATA_KEY = "naa_guard"
LABELS = {**METRIC_LABELS, "epsilon_lb": "epsilon lower bound"}
RULES = {
    "upper_ci": "a gate passes only when the upper end of its {level} confidence interval is at or below the limit: a PASS certifies that, at {level} confidence, the attack's leak is within the limit on these samples",
    "point": "a gate passes when the point estimate is at or below the limit (decision: point): a PASS does not certify the leak at any confidence; the interval's upper end is shown beside it",
}


def report_date(report: dict[str, Any], path: Path) -> str:
    """Return the audit's date (YYYY-MM-DD): the report's own timestamp, else the day report.json was written (UTC)."""
    stamp = report.get("created") or (report.get("environment") or {}).get("created")
    if isinstance(stamp, str) and len(stamp) >= 10:
        return stamp[:10]
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")


def source_name(source: Any) -> str:
    """Return a data source by name, never a local path: a file or folder's own name, a Hub id as it is."""
    text = str(source or "unknown")
    return Path(text).name if ("/" in text or "\\" in text) and (Path(text).is_absolute() or text.startswith((".", "~")) or Path(text).suffix) else text


def _confidence(report: dict[str, Any]) -> float:
    return float(((report.get("fingerprint") or {}).get("attack_settings") or {}).get("confidence") or next(iter(report["attacks"].values()))["metrics"]["confidence"])


def section(report: dict[str, Any], date: str) -> str:
    """Return the Markdown of the Privacy audit section (markers included) for a checked report."""
    level = percent(_confidence(report))
    verdict = verdict_word(report)
    lines = [START, "## Privacy audit", "", f"**Verdict: {verdict}** — membership-inference audit by naa-guard {report.get('naa_guard_version')}, {date}.", ""]
    lines += ["| attack | metric | value | " + level + " CI | limit | decision | verdict |", "|---|---|---|---|---|---|---|"]
    for gate in report["gates"]:
        ci = "(a lower bound)" if gate["metric"] == "epsilon_lb" else f"{gate['ci'][0]:.3f}-{gate['ci'][1]:.3f}"
        lines.append(f"| {gate['attack']} | {LABELS[gate['metric']]} | {gate['value']:.3f} | {ci} | {gate['limit']:.3f} | {gate['decision']} | {gate['status'].upper()} |")
    lines += ["", "**Attacks and settings:**", ""]
    for name, attack in report["attacks"].items():
        params = ", ".join(f"{key}={value}" for key, value in (attack.get("params") or {}).items() if key != "name")
        lines.append(f"- `{name}`: {params or 'defaults'} ({attack.get('queries_per_sample')} queries per sample)")
    lines += ["", f"**Counts:** {report['n_members']} members and {report['n_nonmembers']} non-members scored" + (f" (a seeded subsample, limit {report['limit']})" if report.get("limit") else "") + f"; seed {report.get('seed')}, {report.get('dtype')}.", ""]
    decisions = sorted({gate["decision"] for gate in report["gates"] if gate["metric"] != "epsilon_lb"})
    lines.append("**Decision rule:** " + "; ".join(RULES[d].format(level=level) for d in decisions if d in RULES) + ". A FAIL or ERROR certifies nothing; a PASS says nothing about samples or attacks not listed here.")
    lines += ["", f"**Conditioning:** {report.get('conditioning') or 'none (unconditional model, or no text condition)'}", "", "**Data sources:**", ""]
    fingerprint = report.get("fingerprint") or {}
    for role in ("members", "nonmembers"):
        entry = fingerprint.get(role) or {}
        lines.append(f"- {role}: `{source_name(entry.get('source'))}` ({entry.get('count')} samples, sha256 {str(entry.get('digest'))[:12]})")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def metadata(report: dict[str, Any], date: str) -> dict[str, Any]:
    """Return the card metadata naa-guard owns: version, verdict, worst gated figures, date."""
    worst = {metric: round(value, 6) for metric, value in worst_figures(report).items()}
    return {"version": report.get("naa_guard_version") or __version__, "verdict": verdict_word(report), "worst": worst, "date": date}


def splice(text: str, block: str, where: Path) -> str:
    """Return the card body with ``block`` in place of the marked section (appended when there is none)."""
    starts, ends = text.count(START), text.count(END)
    if starts == ends == 0:
        return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    if starts != 1 or ends != 1 or text.index(START) > text.index(END):
        raise OutputError(
            f"{where}: the Privacy audit markers are damaged ({starts} start and {ends} end markers, expected one each, start first). "
            f"Fix: delete the section from {START[:34]}... to {END} by hand and run naa-guard card again."
        )
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return head + block + (tail[1:] if tail.startswith("\n") else tail)


def write_card(report_path: Path, card_path: Path) -> Path:
    """Write the Privacy audit section and metadata of ``report_path`` into ``card_path``; return the card's path."""
    report = read_report(Path(report_path))
    try:
        from huggingface_hub import ModelCard
    except ImportError:
        raise OutputError('naa-guard card needs huggingface_hub to parse and write model cards. Fix: pip install "naa-guard[hub]".') from None
    card_path = Path(card_path)
    kind = non_regular_kind(card_path)
    if kind is not None:
        raise OutputError(f"--card {card_path} is {kind}, not a regular file. Fix: give the model card's README.md.")
    import yaml

    try:
        original = card_path.read_text(encoding="utf-8") if card_path.exists() else ""
        card = ModelCard(original, ignore_metadata_errors=False)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise OutputError(f"--card {card_path}: cannot read it as a model card ({' '.join(str(exc).split())}). Fix: repair its YAML front matter, or give another card.") from None
    date = report_date(report, Path(report_path))
    card.data[METADATA_KEY] = metadata(report, date)
    card.text = splice(card.text, section(report, date), card_path)
    written = str(card)
    if written != original:  # an unchanged card is not rewritten
        try:
            card_path.parent.mkdir(parents=True, exist_ok=True)
            card_path.write_text(written, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write the model card {card_path}: {exc.strerror or exc}. Fix: choose a writable path.") from None
    return card_path


def card_digest(path: Path) -> str:
    """Return the sha256 of a card file (for tests and logs)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
