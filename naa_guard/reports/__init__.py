"""What an audit found, for people: the terminal table (:mod:`~naa_guard.reports.text`), report.json,
report.md (:mod:`~naa_guard.reports.markdown`), report.html (:mod:`~naa_guard.reports.html`), the ROC
and score plots (:mod:`~naa_guard.reports.plots`) and the per-sample scores CSV
(:mod:`~naa_guard.reports.scores_csv`). Reports read an :class:`~naa_guard.result.AuditResult`;
nothing below them knows they exist.
"""

from __future__ import annotations
