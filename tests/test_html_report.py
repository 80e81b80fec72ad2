"""Tests of report.html (naa_guard/html_report.py) and the most-exposed members (naa_guard/exposed.py).

The page is opened in a real headless Chromium (tests/browser.py): it must load with no console
error, and the ROC image and the gallery of exposed members must be visible. Where no Chromium is
installed the browser test is skipped with that reason (CI installs it: see .ci/run).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from browser import Browser, find_chromium
from conftest import make_tiny_setup

from naa_guard.audit import AuditResult, audit
from naa_guard.policy import load_policy
from naa_guard.reports.html import to_html
from naa_guard.reports.write import write_reports
from naa_guard.samples import SampleSet
from naa_guard.verdict.exposed import empirical_fpr, most_exposed
from naa_guard.verdict.leakage import evaluate

SCREENSHOT_DIR_ENV = "NAA_GUARD_SCREENSHOT_DIR"  # set it to keep the screenshot for a person to look at


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, Path]:
    """Return the audit of a tiny model with two attacks, an epsilon gate and 12 exposed members, and its report folder."""
    root = tmp_path_factory.mktemp("html")
    policy = make_tiny_setup(
        root, attacks="{naa: {}, loss: {}}", thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, epsilon_lb: 0.8}",
        extra="report: {dir: ./report, exposed: 12}\n",
    )  # fmt: skip
    result = audit(load_policy(policy), progress=False)
    write_reports(result, root / "report")
    return result, root / "report"


def test_report_html_is_self_contained_and_complete(report_dir: tuple[AuditResult, Path]) -> None:
    result, folder = report_dir
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page and not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from anywhere
    headings = re.findall(r"<h2>([^<]+)</h2>", page)
    assert headings[0] == "Gates" and headings[-1] == "Environment"
    assert {"Empirical epsilon lower bound", "ROC (log-log) and score histograms", "Validity checks", "Most-exposed members"} <= set(headings)
    assert page.count('src="data:image/png;base64,') == 1 + 2 + 12  # ROC, two histograms, 12 thumbnails
    assert "not a formal differential-privacy audit" in page
    for key in ("naa_guard", "torch", "diffusers", "device", "dtype", "seed", "policy_sha256"):
        assert f"<td>{key}</td>" in page
    assert result.environment["policy_sha256"] in page


def test_report_json_and_markdown_list_the_exposed_members(report_dir: tuple[AuditResult, Path]) -> None:
    result, folder = report_dir
    exposed = json.loads((folder / "report.json").read_text())["exposed"]
    assert exposed["attack"] == max(result.attacks, key=lambda name: result.attacks[name].leakage.leak_auc)
    assert [m["rank"] for m in exposed["members"]] == list(range(1, 13))
    markdown = (folder / "report.md").read_text()
    assert "**Most-exposed members**" in markdown and f"| 1 | {exposed['members'][0]['name']} |" in markdown
    assert "**Empirical epsilon lower bound**" in markdown


def test_report_html_renders_in_a_headless_browser(report_dir: tuple[AuditResult, Path], tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (install the chromium package; .ci/run does)")
    _, folder = report_dir
    with Browser(chromium, width=1200, height=900) as browser:
        browser.open((folder / "report.html").as_uri())
        title = browser.evaluate("document.title")
        verdict = browser.evaluate("document.getElementById('verdict').textContent")
        roc = browser.evaluate(
            "(() => { const img = document.getElementById('roc'); img.scrollIntoView();"
            " const box = img.getBoundingClientRect(); const style = getComputedStyle(img);"
            " return {complete: img.complete, width: img.naturalWidth, shownWidth: box.width, top: box.top, bottom: box.bottom,"
            " viewport: innerHeight, visible: style.visibility === 'visible' && style.display !== 'none'}; })()"
        )
        gallery = browser.evaluate(
            "(() => { const g = document.getElementById('gallery'); g.scrollIntoView();"
            " const box = g.getBoundingClientRect(); const images = [...g.querySelectorAll('img')];"
            " return {images: images.length, decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,"
            " shown: images.filter(i => i.getBoundingClientRect().width >= 90).length,"
            " top: box.top, height: box.height, viewport: innerHeight}; })()"
        )
        errors = browser.console_errors()
        shot = browser.screenshot(Path(os.environ.get(SCREENSHOT_DIR_ENV, tmp_path)) / "report.png")
    assert errors == []
    assert title.startswith("naa-guard: tiny") and verdict in ("PASS", "FAIL", "ERROR")
    assert roc["complete"] and roc["width"] > 0 and roc["shownWidth"] > 300 and roc["visible"]
    assert 0 <= roc["top"] < roc["viewport"] and roc["bottom"] > 0  # scrolled into view
    assert gallery["images"] == gallery["decoded"] == gallery["shown"] == 12
    assert gallery["height"] > 0 and 0 <= gallery["top"] < gallery["viewport"]
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_sees_console_errors_and_broken_images(tmp_path: Path) -> None:
    """The checks above must be able to fail: a broken image and a script error are both caught."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (install the chromium package; .ci/run does)")
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img id="roc" src="missing.png"><script>console.error("boom")</script></body></html>')
    with Browser(chromium) as browser:
        browser.open(page.as_uri())
        width = browser.evaluate("document.getElementById('roc').naturalWidth")
        errors = browser.console_errors()
    assert width == 0
    assert "boom" in errors and any("missing.png" in error or "ERR_FILE_NOT_FOUND" in error for error in errors), errors


def test_html_escapes_names() -> None:
    """A policy name is user text: it must not become markup."""
    result = AuditResult("<b>x</b>", None, 0, 0, {}, [], None, "float32", 0, None, False)
    page = to_html(result)
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def _samples(n: int) -> SampleSet:
    images = np.linspace(-1, 1, n * 4, dtype=np.float32).reshape(n, 1, 2, 2)
    return SampleSet.from_images(images, tuple(f"m{i}.png" for i in range(n)), np.arange(n, dtype=np.int64) + 100, (None,) * n, Path("/data/members"), ())


def test_empirical_fpr_counts_nonmembers_strictly_above_in_the_leak_direction() -> None:
    nonmembers = np.array([0.0, 1.0, 2.0, 3.0])
    assert empirical_fpr(np.array([2.0, 3.5, -1.0]), nonmembers, "members_higher").tolist() == [0.25, 0.0, 1.0]
    assert empirical_fpr(np.array([2.0, 3.5, -1.0]), nonmembers, "members_lower").tolist() == [0.5, 1.0, 0.0]


def test_most_exposed_ranks_members_of_the_worst_attack_and_keeps_only_their_images() -> None:
    from naa_guard.audit import AttackResult

    nonmembers = np.array([1.0, -1.0, -4.0, -6.0])

    def attack(name: str, members: np.ndarray) -> AttackResult:
        return AttackResult(name, {}, 1, 0.0, members, nonmembers, evaluate(members, nonmembers, n_bootstrap=10))

    weak = attack("weak", np.array([1.0, -1.0, -4.0, -6.0, 0.0]))  # leak AUC 0.55
    # Members score LOWER (AUC 0.3, leak AUC 0.7): the ranking must follow the leak direction.
    reversed_attack = attack("reversed", -np.array([0.1, 5.0, 2.0, 9.0, 8.0]))
    exposed = most_exposed({"weak": weak, "reversed": reversed_attack}, _samples(5), 3)
    assert exposed is not None and exposed.attack == "reversed" and exposed.direction == "members_lower"
    assert [m.name for m in exposed.members] == ["m3.png", "m4.png", "m1.png"]
    assert [m.index for m in exposed.members] == [103, 104, 101]
    assert [m.score for m in exposed.members] == [-9.0, -8.0, -5.0]
    assert [m.fpr for m in exposed.members] == [0.0, 0.0, 0.25]  # oriented non-members: -1, 1, 4, 6
    assert exposed.images.shape == (3, 1, 2, 2) and np.array_equal(exposed.images[0], _samples(5).images[3])
    assert most_exposed({"reversed": reversed_attack}, _samples(5), 0) is None
