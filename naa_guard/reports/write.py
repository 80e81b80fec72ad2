"""Write an audit's report folder (report.json, report.md, report.html and the plots), and check
before any scoring that an output path can be written: no verdict is given without its report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from naa_guard.errors import OutputError

if TYPE_CHECKING:
    from naa_guard.result import AuditResult


def check_output(path: Path, *, folder: bool, where: str) -> None:
    """Return None; raise OutputError unless ``path`` can be created or overwritten as a file (or a folder)."""
    if path.exists():
        if folder and not path.is_dir():
            raise OutputError(f"{where} {path} is a file, not a folder. Fix: give a folder path, or remove the file.")
        if not folder and path.is_dir():
            raise OutputError(f"{where} {path} is a folder; it needs a file path. Fix: give a file name, e.g. {path / 'report.json'}.")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{where} {path}: {parent} is a file, so nothing can be created under it. Fix: choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{where} {path}: the folder {parent} is not writable. Fix: choose a writable path, or fix its permissions.")


def write_reports(result: AuditResult, directory: Path, *, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``directory``; return the paths written.

    Unless ``plots`` is False, also the log-log ROC plot ``roc.png`` and one ``scores_<attack>.png`` histogram
    per attack (matplotlib is imported only then), and the HTML report inlines them.
    """
    from naa_guard.reports.markdown import to_markdown

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
