"""Data sources that misled or confused (issue 24 item 10): lists of captions, a damaged state.json,
encoded image columns without Hugging Face metadata, data.split on a non-dataset source, the case
of a metadata file's path, and a long list of shape mismatches before the message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, edit_json, make_tiny_model

from naa_guard.errors import DataError, TargetError
from naa_guard.samples import list_samples
from naa_guard.targets import load_target, read_model_info

SD = FIXTURES / "tiny_sd"
PNG = [(SD / "members" / f"00{i}.png").read_bytes() for i in range(3)]


def _listed(source: Path, **options: object):  # type: ignore[no-untyped-def]
    return list_samples(source, size=32, channels=3, **options)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- captions stored as lists


def test_a_list_of_captions_is_read_by_its_first_entry(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(PNG[i])
    rows = [{"path": "0.png", "caption": ["a cat", "a feline"]}, {"path": "1.png", "caption": []}, {"path": "2.png", "caption": ["\u200b", "x"]}]
    (tmp_path / "set.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert _listed(tmp_path / "set.jsonl").captions == ("a cat", None, None)  # an empty list and a blank first entry are missing
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(tmp_path / "0.png", folder / "0.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": ["first", "second"]}) + "\n", encoding="utf-8")
    assert _listed(folder).captions == ("first",)
    (tmp_path / "set.jsonl").write_text(json.dumps({"path": "0.png", "caption": [3, "a cat"]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="a list whose first entry is of type int"):
        _listed(tmp_path / "set.jsonl")


def test_a_dataset_column_of_caption_lists_uses_the_first_and_a_skipped_column_is_named(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    images = [{"bytes": data, "path": None} for data in PNG[:2]]
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_dict({"image": images, "caption": [["a cat", "a feline"], ["a dog"]]}, features=features).to_parquet(str(tmp_path / "lists.parquet"))
    listed = _listed(tmp_path / "lists.parquet")
    assert listed.captions == ("a cat", "a dog")
    assert any("list of captions: the first is used" in note for note in listed.notes)
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("int64")})
    datasets.Dataset.from_dict({"image": images, "caption": [1, 2]}, features=features).to_parquet(str(tmp_path / "ints.parquet"))
    listed = _listed(tmp_path / "ints.parquet")
    assert listed.captions == (None, None)
    assert any("column 'caption' skipped as a caption column" in note and "int64" in note for note in listed.notes)


# ----------------------------------------------------------------------------- datasets


def test_a_truncated_state_json_is_a_data_error(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": [{"bytes": PNG[0], "path": None}], "text": ["a cat"]}, features=features).save_to_disk(str(tmp_path / "saved"))
    state = tmp_path / "saved" / "state.json"
    state.write_text(state.read_text(encoding="utf-8")[:20], encoding="utf-8")
    with pytest.raises(DataError, match=r"Cannot read .*state.json .*truncated or damaged.*save_to_disk"):
        _listed(tmp_path / "saved")


def _raw_parquet(path: Path, columns: dict[str, object]) -> Path:
    """Write a parquet file with pyarrow alone: no Hugging Face features in its metadata."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(path))
    return path


def test_encoded_image_columns_without_hugging_face_metadata(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    struct = pa.array([{"bytes": data, "path": f"{i}.png"} for i, data in enumerate(PNG)], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    with_struct = _raw_parquet(tmp_path / "struct.parquet", {"img": struct, "text": pa.array(["a", "b", "c"])})
    listed = _listed(with_struct)
    assert listed.captions == ("a", "b", "c") and listed.decode(0, 3).shape == (3, 3, 32, 32)
    assert _listed(with_struct, image_column="img").decode(0, 1).shape == (1, 3, 32, 32)  # named: accepted too
    binary = _raw_parquet(tmp_path / "binary.parquet", {"png": pa.array(PNG, type=pa.binary())})
    assert _listed(binary).decode(0, 3).shape == (3, 3, 32, 32)
    two = _raw_parquet(tmp_path / "two.parquet", {"a": pa.array(PNG, type=pa.binary()), "b": struct})
    with pytest.raises(DataError, match=r"2 columns of encoded image bytes \(a, b\).*set data.image_column"):
        _listed(two)
    assert _listed(two, image_column="b").decode(0, 1).shape == (1, 3, 32, 32)
    with pytest.raises(DataError, match="neither an Image feature nor encoded image bytes"):
        _listed(with_struct, image_column="text")


# ----------------------------------------------------------------------------- other sources


def test_data_split_on_a_source_that_is_not_a_dataset_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.split asks the members set for split 'train', but the members source .*members.csv is not a Hugging Face dataset"):
        _listed(SD / "members.csv", split="train")


def test_a_metadata_files_path_keeps_its_case(tmp_path: Path) -> None:
    folder = tmp_path / "MixedCase" / "Set"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(PNG[0])
    metadata = folder / "metadata.jsonl"
    metadata.write_text("".join(json.dumps({"file_name": name, "text": "x"}) + "\n" for name in ("a.png", "./a.png")), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        _listed(folder)
    assert str(caught.value).count(str(metadata)) == 2, str(caught.value)  # both rows named by the real path


def test_many_shape_mismatches_are_counted_after_the_message(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "model", channels=3)
    edit_json(model / "unet" / "config.json", block_out_channels=[16, 32])  # every layer's width differs from the weights'
    with pytest.raises(TargetError) as caught:
        load_target(read_model_info(model), allow_pickle=False, device="cpu", dtype="float32")
    message = str(caught.value)
    assert message.count("size mismatch for") == 3 and " more." in message, message
    assert len(message) < 1500 and message.index("tensor(s) of the weights have another shape") < message.index("size mismatch for")
    assert "re-save" in message
