"""What an audit found, for people: the terminal table (:mod:`~naa_guard.reports.text`), report.json,
report.md (:mod:`~naa_guard.reports.markdown`), report.html (:mod:`~naa_guard.reports.html`), the ROC
and score plots (:mod:`~naa_guard.reports.plots`) and the per-sample scores CSV
(:mod:`~naa_guard.reports.scores_csv`); and where teams look, from a report.json read back and
checked (:mod:`~naa_guard.reports.readback`): the model card's Privacy audit section
(:mod:`~naa_guard.reports.card`), MLflow (:mod:`~naa_guard.reports.mlflowlog`) and the GitHub
Action's script (:mod:`~naa_guard.reports.action`). Reports read an :class:`~naa_guard.result.AuditResult`;
nothing below them knows they exist.
"""

from __future__ import annotations
