"""Tests of naa_guard/plots.py: the log-log ROC figure, score histograms, and the report folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from naa_guard.audit import AttackResult, AuditResult
from naa_guard.reports.plots import histogram_figure, leak_oriented, roc_figure
from naa_guard.reports.write import write_reports
from naa_guard.verdict.leakage import evaluate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _attack(name: str, members: np.ndarray, nonmembers: np.ndarray) -> AttackResult:
    leakage = evaluate(members, nonmembers, n_bootstrap=50, seed=0)
    return AttackResult(name, {}, 1, 0.0, members, nonmembers, leakage)


@pytest.fixture(scope="module")
def result() -> AuditResult:
    """Return an audit with a leaking attack and a reversed one (members score lower)."""
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 400)
    attacks = {"naa": _attack("naa", members, nonmembers), "loss": _attack("loss", -members, -nonmembers)}
    return AuditResult("synthetic", None, 200, 400, attacks, [], "cpu", "float32", 0, None, False)


def test_roc_figure_has_log_axes_one_curve_per_attack_and_chance(result: AuditResult) -> None:
    axes = roc_figure(result).axes[0]
    assert (axes.get_xscale(), axes.get_yscale()) == ("log", "log")
    labels = [line.get_label() for line in axes.get_lines()]
    assert [label.split(":")[0] for label in labels[:2]] == ["naa", "loss"]
    assert "chance" in labels
    assert axes.get_xlim()[0] == pytest.approx(1 / 400)  # one non-member: the lowest resolvable FPR


def test_reversed_attack_is_plotted_in_its_leaky_direction(result: AuditResult) -> None:
    members, nonmembers = leak_oriented(result.attacks["loss"])
    assert result.attacks["loss"].leakage.direction == "members_lower"
    assert members.mean() > nonmembers.mean()
    naa_curve, loss_curve = roc_figure(result).axes[0].get_lines()[:2]
    # Both curves describe the same separation, so they coincide once oriented.
    np.testing.assert_allclose(naa_curve.get_ydata(), loss_curve.get_ydata())


def test_histogram_figure_overlays_members_and_nonmembers(result: AuditResult) -> None:
    axes = histogram_figure(result.attacks["naa"]).axes[0]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["non-members (n=400)", "members (n=200)"]
    assert "AUC" in axes.get_title()


def test_write_reports_with_plots_writes_the_four_kinds_of_artefact(result: AuditResult, tmp_path: Path) -> None:
    written = write_reports(result, tmp_path / "report", plots=True)
    names = sorted(path.name for path in written)
    assert names == ["report.html", "report.json", "report.md", "roc.png", "scores_loss.png", "scores_naa.png"]
    for name in ("roc.png", "scores_naa.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "report" / "report.json").read_text())["name"] == "synthetic"


def test_write_reports_without_plots_draws_no_figure(result: AuditResult, tmp_path: Path) -> None:
    assert sorted(path.name for path in write_reports(result, tmp_path, plots=False)) == ["report.html", "report.json", "report.md"]
    assert "figures not drawn" in (tmp_path / "report.html").read_text()
