"""Figures of an audit: one log-log ROC plot of every attack, and a score histogram per attack.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (rendered by Agg), never through
``pyplot``: a gate running inside someone's session must not switch their backend or leave
figures open. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from naa_guard.verdict.metrics import MEMBERS_HIGHER, roc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from naa_guard.result import AttackResult, AuditResult

FPR_MARKS = (0.01, 0.001)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def leak_oriented(attack: AttackResult) -> tuple[np.ndarray, np.ndarray]:
    """Return (member, non-member) scores oriented so that higher means member for this attack.

    A reversed attack (members score lower) is plotted in its leakier direction, as it is gated.
    """
    sign = 1.0 if attack.leakage.direction == MEMBERS_HIGHER else -1.0
    return sign * attack.member_scores, sign * attack.nonmember_scores


def roc_figure(result: AuditResult) -> Figure:
    """Return a figure of every attack's ROC curve on log-log axes, with the chance line.

    Log axes show the low-FPR regime the TPR@1%FPR and TPR@0.1%FPR gates read; the lowest FPR
    shown is one non-member, below which nothing can be resolved.
    """
    figure = _figure(6.0, 5.0)
    axes = figure.subplots()
    floor = 1.0 / max(result.n_nonmembers, 1)
    tpr_floor = 0.5 / max(result.n_members, 1)  # below one member found
    for name, attack in result.attacks.items():
        members, nonmembers = leak_oriented(attack)
        fpr, tpr, _ = roc(members, nonmembers)
        tpr_1 = attack.leakage.metrics["tpr_at_1pct_fpr"].value
        label = f"{name}: AUC {attack.leakage.leak_auc:.3f}, TPR@1%FPR {tpr_1:.1%}"
        # Clip zeros onto the floor so a curve starts on the axes instead of vanishing at log(0).
        axes.step(np.maximum(fpr, floor), np.maximum(tpr, tpr_floor), where="post", label=label)
    grid = np.logspace(np.log10(floor), 0, 100)
    axes.plot(grid, grid, color="grey", linestyle="--", linewidth=1, label="chance")
    for level in FPR_MARKS:
        if level >= floor:
            axes.axvline(level, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor, 1.0)
    axes.set_ylim(tpr_floor, 1.05)
    axes.set_xlabel("false positive rate (non-members flagged)")
    axes.set_ylabel("true positive rate (members found)")
    axes.set_title(f"{result.name}: membership ROC ({result.n_members} members / {result.n_nonmembers} non-members)", fontsize=9)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def histogram_figure(attack: AttackResult) -> Figure:
    """Return a figure of one attack's member and non-member score histograms."""
    figure = _figure(6.0, 4.0)
    axes = figure.subplots()
    members, nonmembers = attack.member_scores, attack.nonmember_scores
    bins = np.histogram_bin_edges(np.concatenate([members, nonmembers]), bins=40)
    # Densities, not counts: the two sets often differ in size.
    axes.hist(nonmembers, bins=bins, density=True, alpha=0.55, label=f"non-members (n={len(nonmembers)})")
    axes.hist(members, bins=bins, density=True, alpha=0.55, label=f"members (n={len(members)})")
    direction = "members score higher" if attack.leakage.direction == MEMBERS_HIGHER else "members score LOWER"
    axes.set_title(f"{attack.name} scores: AUC {attack.leakage.leak_auc:.3f} ({direction})", fontsize=9)
    axes.set_xlabel("attack score (higher = more likely a member)")
    axes.set_ylabel("density")
    axes.legend(fontsize=8)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def write_plots(result: AuditResult, directory: Path) -> list[Path]:
    """Write ``roc.png`` and one ``scores_<attack>.png`` per attack into ``directory``; return the paths."""
    written = [_save(roc_figure(result), directory / "roc.png")]
    for name, attack in result.attacks.items():
        # a calibrated result's name has a slash (loss/ref): its file is scores_loss-ref.png
        written.append(_save(histogram_figure(attack), directory / f"scores_{name.replace('/', '-')}.png"))
    return written
