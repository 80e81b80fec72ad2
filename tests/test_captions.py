"""Captions where trainers keep them (naa_guard/captions.py): imagefolder metadata files, caption
sidecars, manifest columns, and one rule for blank captions in every source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from naa_guard.errors import DataError
from naa_guard.samples import files_digest, list_samples


def _image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
    return path


def _listed(source: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return list_samples(source, size=8, channels=3, **kwargs)  # type: ignore[arg-type]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_metadata_jsonl_and_nested_metadata_csv_give_each_image_its_caption(tmp_path: Path) -> None:
    for name, value in (("a.png", 1), ("sub/b.png", 2), ("nested/c.png", 3), ("nested/deeper/d.png", 4)):
        _image(tmp_path / name, value)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "an a"}, {"file_name": "sub/b.png", "text": "a b"}])
    # a metadata file in a subfolder: its file_name is relative to that subfolder
    _csv(tmp_path / "nested" / "metadata.csv", ["file_name", "text"], [["c.png", "a c"], ["deeper/d.png", "a d"]])
    samples = _listed(tmp_path)
    assert samples.names == ("a.png", "nested/c.png", "nested/deeper/d.png", "sub/b.png")
    assert samples.captions == ("an a", "a c", "a d", "a b")
    assert {tmp_path / "metadata.jsonl", tmp_path / "nested" / "metadata.csv"} <= set(samples.files)  # the cache key sees them


def test_a_caption_edit_in_metadata_changes_the_data_digest(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "caption": "first"}])
    before = files_digest(_listed(tmp_path).files)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "caption": "other"}])
    assert files_digest(_listed(tmp_path).files) != before


def test_txt_and_caption_sidecars_are_read_beside_each_image(tmp_path: Path) -> None:
    _image(tmp_path / "0001.png", 1)
    _image(tmp_path / "0002.png", 2)
    _image(tmp_path / "deep" / "0003.jpg", 3)
    _image(tmp_path / "0004.png", 4)
    (tmp_path / "0001.txt").write_text("a first scene\n", encoding="utf-8")
    (tmp_path / "0002.caption").write_text("a second scene", encoding="utf-8")
    (tmp_path / "deep" / "0003.txt").write_text("  a third scene  \n\n", encoding="utf-8")
    (tmp_path / "0004.txt").write_text("same", encoding="utf-8")
    (tmp_path / "0004.caption").write_text("same\n", encoding="utf-8")  # two sidecars that agree
    samples = _listed(tmp_path)
    assert samples.captions == ("a first scene", "a second scene", "same", "a third scene")
    assert tmp_path / "0001.txt" in samples.files


@pytest.mark.parametrize("source", ["csv manifest", "jsonl manifest", "metadata.jsonl", "metadata.csv", "sidecar"])
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_caption_is_a_missing_caption_in_every_source(tmp_path: Path, source: str, blank: str) -> None:
    _image(tmp_path / "img" / "a.png", 1)
    _image(tmp_path / "img" / "b.png", 2)
    if source == "csv manifest":
        _csv(tmp_path / "m.csv", ["path", "caption"], [["img/a.png", blank], ["img/b.png", "a real one"]])
        path = tmp_path / "m.csv"
    elif source == "jsonl manifest":
        _jsonl(tmp_path / "m.jsonl", [{"path": "img/a.png", "caption": blank}, {"path": "img/b.png", "caption": "a real one"}])
        path = tmp_path / "m.jsonl"
    elif source == "metadata.jsonl":
        _jsonl(tmp_path / "img" / "metadata.jsonl", [{"file_name": "a.png", "text": blank}, {"file_name": "b.png", "text": "a real one"}])
        path = tmp_path / "img"
    elif source == "metadata.csv":
        _csv(tmp_path / "img" / "metadata.csv", ["file_name", "text"], [["a.png", blank], ["b.png", "a real one"]])
        path = tmp_path / "img"
    else:
        (tmp_path / "img" / "a.txt").write_text(blank, encoding="utf-8")
        (tmp_path / "img" / "b.txt").write_text("a real one", encoding="utf-8")
        path = tmp_path / "img"
    assert _listed(path).captions == (None, "a real one")


def test_caption_column_names_another_column_in_metadata_and_manifests(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "prompt_text": "from the named column", "text": "not this"}])
    assert _listed(tmp_path, caption_column="prompt_text").captions == ("from the named column",)
    _csv(tmp_path / "m.csv", ["path", "long_caption"], [["a.png", "a manifest caption"]])
    assert _listed(tmp_path / "m.csv", caption_column="long_caption").captions == ("a manifest caption",)
    _csv(tmp_path / "t.csv", ["path", "text"], [["a.png", "text is recognised"]])
    assert _listed(tmp_path / "t.csv").captions == ("text is recognised",)
    with pytest.raises(DataError, match=r"no 'typo' column \(data.caption_column\).*Fix: set data.caption_column"):
        _listed(tmp_path, caption_column="typo")


def test_both_caption_and_text_columns_without_a_choice_are_refused(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "one", "caption": "two"}])
    with pytest.raises(DataError, match=r"both a 'caption' and a 'text' column.*data.caption_column"):
        _listed(tmp_path)


def test_metadata_without_a_caption_column_leaves_the_sidecars_to_decide(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "width": 8}])
    (tmp_path / "a.txt").write_text("from the sidecar", encoding="utf-8")
    assert _listed(tmp_path).captions == ("from the sidecar",)


def test_a_metadata_caption_and_a_sidecar_that_agree_are_one_caption(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    _jsonl(tmp_path / "metadata.jsonl", [{"file_name": "a.png", "text": "one caption"}])
    (tmp_path / "a.txt").write_text("one caption\n", encoding="utf-8")
    assert _listed(tmp_path).captions == ("one caption",)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("unlisted", r"1 of its 2 images have no row in any metadata file \(b.png\).*Fix: add a row"),
        ("missing file", r"Line 2 of .*metadata.jsonl names 'gone.png'.*no file exists there.*Fix"),
        ("not an image", r"names 'notes.txt'.*not one of the folder's images"),
        ("outside", r"names '../a.png'.*not one of the folder's images"),
        ("twice", r"Line 3 of .*names './a.png', the image already named by line 1 of .*metadata.jsonl"),
        ("jsonl and csv", r"holds both metadata.jsonl and metadata.csv"),
        ("disagree", r"Image a.png .* caption 'one' in its metadata file but 'two' in a.txt"),
        ("blank vs sidecar", r"Image a.png .* caption None in its metadata file but 'two' in a.txt"),
        ("two sidecars", r"two caption sidecars that disagree: a.txt says 'two', a.caption says 'three'"),
        ("multi-line sidecar", r"a.txt .* has 2 non-blank lines.*kohya-ss"),
        ("no file_name", r"Line 1 of .*metadata.jsonl has no string 'file_name'"),
    ],
)
def test_metadata_and_sidecars_that_leave_a_caption_unsure_are_errors(tmp_path: Path, layout: str, message: str) -> None:
    folder = tmp_path / "set"
    _image(folder / "a.png", 1)
    _image(folder / "b.png", 2)
    rows: list[dict[str, object]] = [{"file_name": "a.png", "text": "one"}, {"file_name": "b.png", "text": "bee"}]
    if layout == "unlisted":
        rows = rows[:1]
    elif layout == "missing file":
        rows.insert(1, {"file_name": "gone.png", "text": "x"})
    elif layout == "not an image":
        (folder / "notes.txt").write_text("x")
        rows.append({"file_name": "notes.txt", "text": "x"})
    elif layout == "outside":
        _image(tmp_path / "a.png", 1)
        rows.append({"file_name": "../a.png", "text": "x"})
    elif layout == "twice":
        rows.append({"file_name": "./a.png", "text": "again"})
    elif layout == "jsonl and csv":
        _csv(folder / "metadata.csv", ["file_name", "text"], [["a.png", "one"], ["b.png", "bee"]])
    elif layout in ("disagree", "blank vs sidecar", "two sidecars", "multi-line sidecar"):
        (folder / "a.txt").write_text("two\nand more\n" if layout == "multi-line sidecar" else "two")
        if layout == "blank vs sidecar":
            rows[0]["text"] = " "
        if layout == "two sidecars":
            rows[0].pop("text")
            rows[1].pop("text")
            (folder / "a.caption").write_text("three")
    elif layout == "no file_name":
        rows[0] = {"path": "a.png", "text": "one"}
    _jsonl(folder / "metadata.jsonl", rows)
    with pytest.raises(DataError, match=message):
        _listed(folder)


def test_a_folder_without_captions_lists_none(tmp_path: Path) -> None:
    _image(tmp_path / "a.png", 1)
    (tmp_path / "README.txt").write_text("not a caption: no image is named README")
    samples = _listed(tmp_path)
    assert samples.captions == (None,) and samples.files == (tmp_path / "a.png",)
