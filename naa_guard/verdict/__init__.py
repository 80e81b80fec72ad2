"""Verdicts: what the scores say and whether the audit may say it.

Leakage metrics with bootstrap intervals (:mod:`~naa_guard.verdict.metrics`,
:mod:`~naa_guard.verdict.leakage`), the gates and whether the counts can resolve them
(:mod:`~naa_guard.verdict.gates`, :mod:`~naa_guard.verdict.resolvable`), the epsilon lower bound,
the regression gate against a baseline and its fingerprint, the validity checks (overlap,
distribution shift, null control) and the most-exposed members. Nothing here knows of reports.
"""

from __future__ import annotations
