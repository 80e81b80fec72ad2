"""Write an audit's report folder: report.json (last, so its presence means the others are there),
report.md, report.html and the plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from naa_guard.reports.markdown import to_markdown

if TYPE_CHECKING:
    from naa_guard.result import AuditResult


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
        from naa_guard.reports.plots import write_plots

        drawn = write_plots(result, directory)  # roc.png, then scores_<attack>.png in attack order
        written += drawn
        figures = dict(zip(["roc", *result.attacks], (path.read_bytes() for path in drawn)))
    from naa_guard.reports.html import write_html

    written.append(write_html(result, directory / "report.html", figures=figures))
    return written
