"""Issue 28: ``naa-guard card`` writes a report.json's Privacy audit section into a model card.

The section goes between markers (re-running replaces it, byte for byte), the card's metadata gets
the verdict and the worst gated figures, nothing else in the card changes, and a report.json that
does not check out is refused: never a PASS section from an edited file.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import OVERFIT, write_policy

from naa_guard.cli import main
from naa_guard.errors import ReportError
from naa_guard.reports.card import END, START, write_card

huggingface_hub = pytest.importorskip("huggingface_hub")

CARD = """---
license: apache-2.0
tags:
- diffusion
- digits
---

# Digits DDPM

A small model. Trained on 8x8 digits.

## Limitations

Only digits.
"""


def demo_policy(folder: Path, *, limit: int = 40) -> Path:
    """The demo's policy over the committed overfit digits model, on a seeded subsample (fast)."""
    return write_policy(
        folder / "demo.naa.yaml",
        f"""
        version: 1
        name: demo
        model: {{path: {OVERFIT / "model"}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}, limit: {limit}}}
        attacks: {{naa: {{t: 40, stride: 10, queries: 2, noise: scaled, sigma: 0.1}}}}
        thresholds: {{auc: 0.60, tpr_at_1pct_fpr: 0.05, unresolvable: warn}}
        runtime: {{device: cpu, batch_size: 128}}
        """,
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("card")
    assert main(["audit", str(demo_policy(folder)), "--json", str(folder / "report.json"), "--quiet"]) == 1  # the demo leaks
    return folder / "report.json"


def test_the_section_is_written_between_markers_with_metadata_and_a_second_write_is_byte_identical(report: Path, tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text(CARD, encoding="utf-8")
    assert main(["card", str(report), "--card", str(card)]) == 0
    first = card.read_bytes()
    text = first.decode("utf-8")
    assert text.count(START) == 1 and text.count(END) == 1
    assert text.split(START)[0].endswith("Only digits.\n\n") and "# Digits DDPM\n\nA small model. Trained on 8x8 digits." in text
    loaded = huggingface_hub.ModelCard.load(card)
    gates = json.loads(report.read_text(encoding="utf-8"))["gates"]
    assert loaded.data.license == "apache-2.0" and loaded.data.tags == ["diffusion", "digits"]
    assert loaded.data.naa_guard["verdict"] == "FAIL"
    assert loaded.data.naa_guard["worst"]["auc"] == pytest.approx(max(g["value"] for g in gates if g["metric"] == "auc"), abs=1e-6)
    block = text.split(START)[1].split(END)[0]
    rows = [line for line in block.splitlines() if line.startswith("| naa")]
    assert len(rows) == len(gates) == 2 and all(f"{g['value']:.3f}" in row and g["status"].upper() in row for g, row in zip(gates, rows))
    for needed in ("Decision rule", "upper end of its 95% confidence interval", "Conditioning", "`members.npz` (40 samples", "`nonmembers.npz`", "t=40", "40 members and 40 non-members"):
        assert needed in block
    assert str(OVERFIT) not in text  # data sources by name, never local paths

    assert main(["card", str(report), "--card", str(card)]) == 0
    assert card.read_bytes() == first


def test_a_card_that_does_not_exist_is_created_and_a_hand_edited_section_is_replaced(report: Path, tmp_path: Path) -> None:
    card = tmp_path / "new" / "README.md"
    write_card(report, card)
    written = card.read_text(encoding="utf-8")
    card.write_text(written.replace("## Privacy audit", "## Privacy audit\n\nall good, PASS"), encoding="utf-8")
    write_card(report, card)
    assert card.read_text(encoding="utf-8") == written


def _edited(report: Path, folder: Path, edit: Any) -> Path:
    data = json.loads(report.read_text(encoding="utf-8"))
    edit(data)
    path = folder / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _pass_all(data: dict[str, Any]) -> None:
    for gate in data["gates"]:
        gate.update(status="pass", passed=True)
    data["passed"] = True


def _drop_failing(data: dict[str, Any]) -> None:
    data["gates"] = [gate for gate in data["gates"] if gate["metric"] != "auc"]
    _pass_all(data)


def _raise_limit(data: dict[str, Any]) -> None:
    _pass_all(data)
    for gate in data["gates"]:
        gate["limit"] = 0.5  # still below the upper ends: the PASS does not follow from the figures


def _drop_a_row(data: dict[str, Any]) -> None:
    data["gates"] = [gate for gate in data["gates"] if gate["metric"] != "auc"]  # still FAIL, but a row the policy gates is gone


def _lower_figures(data: dict[str, Any]) -> None:
    data["attacks"]["naa"]["metrics"]["metrics"]["auc"]["value"] = 0.5


@pytest.mark.parametrize(
    "edit", [_pass_all, _drop_failing, _drop_a_row, _raise_limit, _lower_figures, lambda d: d.pop("fingerprint"), lambda d: d["gates"].append(copy.deepcopy(d["gates"][0])), lambda d: d.update(gates=[])],
    ids=["statuses-flipped", "failing-row-dropped", "row-of-the-policy-dropped", "pass-beyond-limit", "figures-edited", "not-a-report", "row-twice", "no-gates"],
)
def test_a_report_that_does_not_check_out_writes_no_section(report: Path, tmp_path: Path, edit: Any, capsys: pytest.CaptureFixture[str]) -> None:
    card = tmp_path / "README.md"
    card.write_text(CARD, encoding="utf-8")
    edited = _edited(report, tmp_path, edit)
    with pytest.raises(ReportError, match=r"report .*edited\.json"):
        write_card(edited, card)
    assert main(["card", str(edited), "--card", str(card)]) == 2 and "ReportError" in capsys.readouterr().err
    assert card.read_text(encoding="utf-8") == CARD


def test_damaged_markers_are_refused_not_guessed(report: Path, tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text(CARD + START + "\nhalf a section\n", encoding="utf-8")
    assert main(["card", str(report), "--card", str(card)]) == 2
    assert card.read_text(encoding="utf-8") == CARD + START + "\nhalf a section\n"


@pytest.mark.parametrize("front", ["---\nlicense: [unclosed\n---\n# x\n", "---\n- a list\n---\n# x\n"], ids=["broken-yaml", "not-a-mapping"])
def test_a_card_with_damaged_front_matter_is_refused_and_left_alone(report: Path, tmp_path: Path, front: str, capsys: pytest.CaptureFixture[str]) -> None:
    card = tmp_path / "README.md"
    card.write_text(front, encoding="utf-8")
    assert main(["card", str(report), "--card", str(card)]) == 2
    assert "cannot read it as a model card" in capsys.readouterr().err and card.read_text(encoding="utf-8") == front
