"""Per-sample scores out: every scored sample as one CSV row (``--scores``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naa_guard.result import AuditResult


SCORE_COLUMNS = ("attack", "role", "index", "source", "score")


def write_scores(result: AuditResult, path: Path) -> Path:
    """Write every scored sample as CSV (attack, role, index, source, score) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for name, attack in result.attacks.items():
            for role, (indices, origins, scores) in attack.per_sample().items():
                for index, origin, score in zip(indices.tolist(), origins, scores.tolist()):
                    writer.writerow((name, role, index, origin, repr(score)))
    return path
