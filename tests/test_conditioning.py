"""Which text a text-to-image model's queries get (naa_guard/conditioning.py), on the tiny SD
fixture (tests/fixtures/tiny_sd): captions from an imagefolder's metadata files and from sidecars
reach the text encoder exactly as a manifest's do; no caption is an error unless the policy asks
for the empty caption, and then every report says it is the weak audit."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, write_policy

from naa_guard.audit import AuditResult, audit
from naa_guard.errors import DataError, PolicyError
from naa_guard.policy import load_policy
from naa_guard.reports.html import to_html
from naa_guard.reports.markdown import to_markdown
from naa_guard.reports.text import format_table

SD = FIXTURES / "tiny_sd"


pytestmark = pytest.mark.usefixtures("one_thread")


def _policy(folder: Path, members: Path, nonmembers: Path, data: str = "", name: str = "sd") -> Path:
    body = (
        f"version: 1\nname: {json.dumps(name)}\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {members}, nonmembers: {nonmembers}{data}}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nruntime: {device: cpu, batch_size: 16, seed: 0}\n"
    )
    return write_policy(folder / "sd.naa.yaml", body)


def _rows(side: str) -> list[tuple[str, str]]:
    with (SD / f"{side}.csv").open(encoding="utf-8") as handle:
        return [(Path(row["path"]).name, row["caption"]) for row in csv.DictReader(handle)]


def _bare_folder(root: Path, side: str) -> Path:
    shutil.copytree(SD / side, root / side)
    return root / side


def _metadata_folder(root: Path, side: str) -> Path:
    """The set in the imagefolder layout: half under part2/ with its own metadata.csv, the rest in a root metadata.jsonl."""
    folder = _bare_folder(root, side)
    rows = _rows(side)
    (folder / "part2").mkdir()
    top, nested = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    for name, _ in nested:
        (folder / name).rename(folder / "part2" / name)
    (folder / "metadata.jsonl").write_text("".join(json.dumps({"file_name": name, "text": caption}) + "\n" for name, caption in top), encoding="utf-8")
    with (folder / "part2" / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["file_name", "text"], *nested])
    return folder


def _sidecar_folder(root: Path, side: str) -> Path:
    folder = _bare_folder(root, side)
    for name, caption in _rows(side):
        (folder / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def manifest_audit(sd_target, tmp_path_factory: pytest.TempPathFactory) -> AuditResult:  # type: ignore[no-untyped-def]
    """The audit over the fixture's CSV manifests (captions in a 'caption' column)."""
    root = tmp_path_factory.mktemp("manifests")
    return audit(load_policy(_policy(root, SD / "members.csv", SD / "nonmembers.csv")), target=sd_target, progress=False)


def test_imagefolder_metadata_and_sidecars_score_exactly_as_the_captioned_manifest(tmp_path: Path, sd_target, manifest_audit: AuditResult) -> None:  # type: ignore[no-untyped-def]
    members, nonmembers = _metadata_folder(tmp_path, "members"), _sidecar_folder(tmp_path, "nonmembers")
    result = audit(load_policy(_policy(tmp_path, members, nonmembers)), target=sd_target, progress=False)
    assert result.conditioning == manifest_audit.conditioning and result.conditioning.startswith("caption")
    expected, found = manifest_audit.attacks["loss"], result.attacks["loss"]
    np.testing.assert_array_equal(found.member_scores, expected.member_scores)  # same captions, same noise: same bits
    np.testing.assert_array_equal(found.nonmember_scores, expected.nonmember_scores)
    assert found.leakage.auc == expected.leakage.auc >= 0.8  # the leak is found, as with the manifest


def test_auto_without_any_caption_is_an_error_naming_where_captions_come_from(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(tmp_path, _bare_folder(tmp_path, "members"), _bare_folder(tmp_path, "nonmembers"))
    with pytest.raises(PolicyError) as caught:
        audit(load_policy(policy), target=sd_target, progress=False)
    message = str(caught.value)
    for source in ("caption column", "metadata.jsonl", "metadata.csv", ".txt / .caption sidecar", "data.prompt", "data.conditioning: empty"):
        assert source in message, source


def test_blank_captions_on_one_side_are_missing_not_a_caption(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    # members with "" captions in a JSON-lines manifest, non-members captioned: once the blank
    # counted as a caption and the leak was measured under unequal conditioning
    shutil.copytree(SD / "members", tmp_path / "members")
    (tmp_path / "members.jsonl").write_text("".join(json.dumps({"path": f"members/{name}", "caption": ""}) + "\n" for name, _ in _rows("members")), encoding="utf-8")
    with pytest.raises(DataError, match=r"some samples have captions but 40 members row\(s\)"):
        audit(load_policy(_policy(tmp_path, tmp_path / "members.jsonl", SD / "nonmembers.csv")), target=sd_target, progress=False)


def test_empty_conditioning_runs_on_purpose_and_every_report_says_it_is_the_weak_audit(tmp_path: Path, sd_target, manifest_audit: AuditResult) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(tmp_path, _bare_folder(tmp_path, "members"), _bare_folder(tmp_path, "nonmembers"), data=", conditioning: empty")
    result = audit(load_policy(policy), target=sd_target, progress=False)
    assert not np.array_equal(result.attacks["loss"].member_scores, manifest_audit.attacks["loss"].member_scores)  # captions mattered
    for face in (format_table(result), to_markdown(result), to_html(result), json.dumps(result.to_dict())):
        assert "weak, caption-free audit" in face
        assert "data.conditioning: empty" in face
    assert any("weak, caption-free audit" in warning for warning in result.to_dict()["warnings"])
    assert 'id="conditioning"' in to_html(result)


def test_markdown_escapes_html_in_names_and_captions_and_html_states_the_conditioning(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(tmp_path, SD / "members.csv", SD / "nonmembers.csv", data=', prompt: "a <img src=x onerror=alert(1)> scene"', name="<b>sd</b>")
    result = audit(load_policy(policy), target=sd_target, progress=False)
    markdown, page = to_markdown(result), to_html(result)
    assert "<img" not in markdown and "<b>" not in markdown
    assert "a &lt;img src=x onerror=alert(1)&gt; scene" in markdown and "&lt;b&gt;sd&lt;/b&gt;" in markdown
    assert "<p id=\"conditioning\">text conditioning: prompt &#x27;a &lt;img src=x onerror=alert(1)&gt; scene&#x27;</p>" in page
