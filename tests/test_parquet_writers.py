"""Parquet written by any tool (img2dataset, pyarrow, pandas): a binary image column or a {bytes, path}
struct without Hugging Face metadata audits like the same PNGs in a folder; captions by their usual names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_shards import leaking_target, pngs, tiny_policy  # noqa: F401  (pngs: the module fixture)

from naa_guard.audit import audit
from naa_guard.errors import DataError
from naa_guard.policy import load_policy
from naa_guard.samples import list_samples

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("datasets")


def write_parquet(path: Path, files: list[Path], style: str, captions: dict[str, list[str]] | None = None) -> Path:
    """Write the PNGs as img2dataset does (key, url, jpg binary, status) or as a {bytes, path} struct, no HF metadata."""
    data = [file.read_bytes() for file in files]
    if style == "img2dataset":
        columns = {"key": [f.stem for f in files], "url": [f"http://x/{f.name}" for f in files], "jpg": data, "status": ["success"] * len(files)}
    else:
        columns = {"image": [{"bytes": d, "path": f.name} for d, f in zip(data, files, strict=True)]}
    table = pa.table({**columns, **(captions or {})})
    pq.write_table(table.replace_schema_metadata(None), path, row_group_size=5)
    return path


@pytest.mark.parametrize("style", ["img2dataset", "bytes_path"])
def test_parquet_from_any_writer_audits_like_the_png_folder_and_fails(tmp_path: Path, pngs: Path, style: str) -> None:  # noqa: F811
    sides = {side: write_parquet(tmp_path / f"{side}.parquet", sorted((pngs / side).glob("*.png")), style) for side in ("members", "nonmembers")}
    (tmp_path / "model").symlink_to(pngs / "model")
    target = leaking_target(pngs)
    folder_result = audit(load_policy(tiny_policy(pngs, pngs / "members", pngs / "nonmembers")), target=target, progress=False)
    result = audit(load_policy(tiny_policy(tmp_path, sides["members"], sides["nonmembers"])), target=target, progress=False)
    np.testing.assert_array_equal(result.attacks["loss"].member_scores, folder_result.attacks["loss"].member_scores)
    np.testing.assert_array_equal(result.attacks["loss"].nonmember_scores, folder_result.attacks["loss"].nonmember_scores)
    assert not result.passed
    column = "jpg" if style == "img2dataset" else "image"
    assert any(f"images from column '{column}'" in w for w in result.warnings), result.warnings


@pytest.mark.parametrize("name", ["caption", "text", "txt", "prompt"])
def test_parquet_captions_come_from_the_usual_names_and_the_report_says_which(tmp_path: Path, pngs: Path, name: str) -> None:  # noqa: F811
    files = sorted((pngs / "members").glob("*.png"))[:6]
    path = write_parquet(tmp_path / "m.parquet", files, "img2dataset", {name: [f"a photo {f.stem}" for f in files]})
    listed = list_samples(path, size=8, channels=1)
    assert listed.captions[2] == "a photo 002"
    assert any(f"captions from '{name}'" in line for line in listed.notes), listed.notes


def test_two_usual_caption_names_without_a_choice_is_an_error(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    files = sorted((pngs / "members").glob("*.png"))[:3]
    path = write_parquet(tmp_path / "m.parquet", files, "img2dataset", {"caption": ["a"] * 3, "prompt": ["b"] * 3})
    with pytest.raises(DataError, match=r"both a 'caption' and a 'prompt' column.*data.caption_column"):
        list_samples(path, size=8, channels=1)
    assert list_samples(path, size=8, channels=1, caption_column="prompt").captions == ("b",) * 3
