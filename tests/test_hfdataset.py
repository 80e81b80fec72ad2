"""Hugging Face datasets as sample sets: parquet shards and save_to_disk folders of the tiny SD fixture's
images, audited with the same scores as the CSV manifests that list the same images and captions."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, write_policy

from naa_guard.audit import audit
from naa_guard.errors import DataError
from naa_guard.policy import load_policy
from naa_guard.samples import list_samples

datasets = pytest.importorskip("datasets")

SD = FIXTURES / "tiny_sd"


def rows(manifest: Path) -> dict[str, list[object]]:
    """Return a manifest's images (as bytes, so the dataset embeds them) and captions, in manifest order."""
    with manifest.open(encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    return {"image": [{"bytes": (manifest.parent / r["path"]).read_bytes(), "path": None} for r in records], "text": [r["caption"] for r in records]}


def split_dataset() -> object:
    """Return the fixture's members (train) and non-members (test) as a DatasetDict with an Image feature."""
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    return datasets.DatasetDict({name: datasets.Dataset.from_dict(rows(SD / f"{side}.csv"), features=features) for name, side in (("train", "members"), ("test", "nonmembers"))})


def write_parquet_shards(folder: Path) -> Path:
    """Write the dataset as the Hub lays it out: data/{split}-0000i-of-0000n.parquet, small row groups."""
    (folder / "data").mkdir(parents=True)
    dataset = split_dataset()
    for split, part in dataset.items():
        shards = 2 if split == "train" else 1
        for i in range(shards):
            part.shard(shards, i, contiguous=True).to_parquet(str(folder / "data" / f"{split}-{i:05d}-of-{shards:05d}.parquet"), batch_size=7)
    return folder


def policy(tmp_path: Path, members: Path, nonmembers: Path, data: str = "", name: str = "ds") -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"version: 1\nname: {name}\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {members}, nonmembers: {nonmembers}, limit: 20{data}}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\n"
        "runtime: {device: cpu, batch_size: 16, seed: 0}\n",
    )


@pytest.fixture(scope="module")
def manifest_scores(tmp_path_factory: pytest.TempPathFactory, sd_target) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("manifest")
    result = audit(load_policy(policy(tmp, SD / "members.csv", SD / "nonmembers.csv")), target=sd_target, progress=False)
    loss = result.attacks["loss"]
    return {"members": loss.member_scores, "nonmembers": loss.nonmember_scores}


@pytest.mark.parametrize("shape", ["parquet_folder", "save_to_disk", "parquet_files"])
def test_a_dataset_audits_like_the_manifest_of_the_same_images(tmp_path: Path, sd_target, manifest_scores, shape: str) -> None:  # type: ignore[no-untyped-def]
    if shape == "save_to_disk":
        split_dataset().save_to_disk(str(tmp_path / "saved"))
        members = nonmembers = tmp_path / "saved"
        data = ", split: {members: train, nonmembers: test}"
    elif shape == "parquet_folder":
        members = nonmembers = write_parquet_shards(tmp_path / "hub")
        data = ", split: {members: train, nonmembers: test}"
    else:  # one parquet file per side: its only split, no data.split needed
        for split, part in split_dataset().items():
            part.to_parquet(str(tmp_path / f"{split}.parquet"), batch_size=5)
        members, nonmembers, data = tmp_path / "train.parquet", tmp_path / "test.parquet", ""
    result = audit(load_policy(policy(tmp_path, members, nonmembers, data)), target=sd_target, progress=False)
    loss = result.attacks["loss"]
    assert result.conditioning.startswith("caption")  # the text column conditions every query
    np.testing.assert_array_equal(loss.member_scores, manifest_scores["members"])
    np.testing.assert_array_equal(loss.nonmember_scores, manifest_scores["nonmembers"])
    assert any("members set is split 'train'" in w for w in result.warnings), result.warnings
    assert any("nonmembers set is split 'test'" in w for w in result.warnings), result.warnings


def test_dataset_rows_decode_to_the_manifest_bytes_chunk_by_chunk(tmp_path: Path) -> None:
    write_parquet_shards(tmp_path / "hub")
    listed = list_samples(tmp_path / "hub", size=32, channels=3, role="members", split="train", limit=9, seed=3)
    manifest = list_samples(SD / "members.csv", size=32, channels=3, role="members", limit=9, seed=3)
    assert listed.captions == manifest.captions
    np.testing.assert_array_equal(np.concatenate([listed.decode(0, 4), listed.decode(4, 9)]), manifest.images)
    assert listed.origin(0).endswith(f"train[{listed.indices[0]}]")
    assert {f.name for f in listed.files} == {"train-00000-of-00002.parquet", "train-00001-of-00002.parquet"}


def test_a_blank_caption_in_a_dataset_is_missing_and_columns_can_be_named(tmp_path: Path) -> None:
    images = rows(SD / "members.csv")["image"][:3]
    datasets.Dataset.from_dict({"picture": images, "prompt": ["a cat", "  ", None], "text": ["x", "y", "z"]}, features=datasets.Features(
        {"picture": datasets.Image(), "prompt": datasets.Value("string"), "text": datasets.Value("string")})).to_parquet(str(tmp_path / "d.parquet"))
    listed = list_samples(tmp_path / "d.parquet", size=32, channels=3, caption_column="prompt", image_column="picture")
    assert listed.captions == ("a cat", None, None)
    assert list_samples(tmp_path / "d.parquet", size=32, channels=3, caption_column="text").captions == ("x", "y", "z")
    with pytest.raises(DataError, match="both a 'text' and a 'prompt' column"):  # two of the usual names: no guess
        list_samples(tmp_path / "d.parquet", size=32, channels=3)
    with pytest.raises(DataError, match="no column 'pic'.*data.image_column"):
        list_samples(tmp_path / "d.parquet", size=32, channels=3, image_column="pic")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_split", r"2 splits \(train, test\).*data.split"),
        ("bad_split", r"no split 'valid'.*train, test"),
        ("two_images", r"2 image columns.*data.image_column"),
        ("path_only", r"only the path .*not the image bytes"),
        ("hub_name", r"reads local files only and never downloads.*huggingface-cli download --repo-type dataset org/pets"),
    ],
)
def test_a_dataset_naa_guard_cannot_read_surely_is_an_error(tmp_path: Path, case: str, message: str) -> None:
    source, split = tmp_path / "saved", None
    if case in ("no_split", "bad_split"):
        split_dataset().save_to_disk(str(source))
        split = "valid" if case == "bad_split" else None
    elif case == "two_images":
        image = rows(SD / "members.csv")["image"][:2]
        datasets.Dataset.from_dict({"a": image, "b": image}, features=datasets.Features({"a": datasets.Image(), "b": datasets.Image()})).to_parquet(str(tmp_path / "x.parquet"))
        source = tmp_path / "x.parquet"
    elif case == "path_only":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = datasets.Features({"image": datasets.Image()}).arrow_schema  # the huggingface metadata included
        pq.write_table(pa.table({"image": [{"bytes": None, "path": str(SD / "members" / "000.png")}]}, schema=schema), tmp_path / "p.parquet")
        source = tmp_path / "p.parquet"
    else:
        source = tmp_path / "org" / "pets"
    with pytest.raises(DataError, match=message):
        list_samples(source, size=32, channels=3, split=split).decode(0, 1)


def test_datasets_not_installed_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split_dataset().save_to_disk(str(tmp_path / "saved"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(DataError, match=r'pip install "naa-guard\[datasets\]"'):
        list_samples(tmp_path / "saved", size=32, channels=3, split="train")


def test_split_is_checked_in_the_policy(tmp_path: Path) -> None:
    from naa_guard.errors import PolicyError

    with pytest.raises(PolicyError, match="data.split"):
        load_policy(policy(tmp_path, SD / "members.csv", SD / "nonmembers.csv", ", split: {member: train}"))
    assert load_policy(policy(tmp_path, SD / "members.csv", SD / "nonmembers.csv", ", split: train")).data.split_for("control") == "train"
