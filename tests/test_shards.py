"""webdataset shards as sample sets: the same PNGs as a folder, in .tar shards, audit with the same scores."""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, make_tiny_model, write_policy
from fakes import KnownImagesTarget
from PIL import Image

from naa_guard.audit import audit
from naa_guard.errors import AuditInvalidError, DataError, PolicyError
from naa_guard.policy import load_policy
from naa_guard.samples import list_samples

SD = FIXTURES / "tiny_sd"


def write_pngs(folder: Path, n: int, seed: int) -> list[Path]:
    """Write n random 8x8 grayscale PNGs named 000.png, ... and return them in order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        files.append(folder / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8)).save(files[-1])
    return files


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(folder: Path, samples: list[tuple[str, dict[str, bytes]]], per_shard: int) -> Path:
    """Write samples (key, {field: bytes}) into shard-000000.tar, ... of per_shard samples each; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(samples), per_shard):
        with tarfile.open(folder / f"shard-{start // per_shard:06d}.tar", "w") as tar:
            for key, fields in samples[start : start + per_shard]:
                for field, data in fields.items():
                    add(tar, f"{key}.{field}", data)
    return folder


def pngs_as_samples(files: list[Path], prefix: str = "") -> list[tuple[str, dict[str, bytes]]]:
    return [(f"{prefix}{file.stem}", {"png": file.read_bytes()}) for file in files]


def tiny_policy(root: Path, members: Path | str, nonmembers: Path | str, data: str = "") -> Path:
    return write_policy(
        root / "p.naa.yaml",
        f"version: 1\nname: shards\nmodel: {{path: {root / 'model'}}}\ndata: {{members: '{members}', nonmembers: '{nonmembers}'{data}}}\n"
        "attacks: {loss: {t: 100}}\nthresholds: {auc: 0.6, tpr_at_1pct_fpr: null, decision: point}\nruntime: {device: cpu, batch_size: 16, seed: 0}\n",
    )


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pngs")
    make_tiny_model(root / "model")
    write_pngs(root / "members", 24, seed=1)
    write_pngs(root / "nonmembers", 24, seed=2)
    return root


def leaking_target(root: Path) -> KnownImagesTarget:
    """A fake model that memorised the member PNGs exactly."""
    sets = [list_samples(root / side, size=8, channels=1, role=side).images for side in ("members", "nonmembers")]
    return KnownImagesTarget(exact=sets[0], perturbed=sets[1])


@pytest.mark.parametrize("form", ["folder", "single", "braces"])
def test_shards_audit_like_the_same_pngs_in_a_folder_and_fail(tmp_path: Path, pngs: Path, form: str) -> None:
    sides = {}
    for side in ("members", "nonmembers"):
        folder = write_shards(tmp_path / side, pngs_as_samples(sorted((pngs / side).glob("*.png"))), per_shard=24 if form == "single" else 7)
        sides[side] = {"folder": folder, "single": folder / "shard-000000.tar", "braces": f"{folder}/shard-{{000000..000003}}.tar"}[form]
    (tmp_path / "model").symlink_to(pngs / "model")
    target = leaking_target(pngs)
    folder_result = audit(load_policy(tiny_policy(pngs, pngs / "members", pngs / "nonmembers")), target=target, progress=False)
    shard_result = audit(load_policy(tiny_policy(tmp_path, sides["members"], sides["nonmembers"])), target=target, progress=False)
    for attack, got in shard_result.attacks.items():
        np.testing.assert_array_equal(got.member_scores, folder_result.attacks[attack].member_scores)
        np.testing.assert_array_equal(got.nonmember_scores, folder_result.attacks[attack].nonmember_scores)
    assert not shard_result.passed and not folder_result.passed
    assert any("webdataset shard" in w for w in shard_result.warnings), shard_result.warnings


def test_shard_samples_are_keyed_as_webdataset_does_and_named_shard_colon_key(tmp_path: Path, pngs: Path) -> None:
    png = (pngs / "members" / "000.png").read_bytes()
    samples = [("a.b", {"png": png, "txt": b"first"}), ("../../evil", {"JPG": png, "txt": b"second"}), ("/abs/x", {"webp": png, "json": b"{}"})]
    write_shards(tmp_path / "s", samples, per_shard=3)
    listed = list_samples(tmp_path / "s", size=8, channels=1, role="members")
    assert listed.names == ("shard-000000.tar:a.b", "shard-000000.tar:../../evil", "shard-000000.tar:/abs/x")
    assert listed.origin(1) == f"{tmp_path / 's' / 'shard-000000.tar'}:../../evil"
    assert listed.captions == ("first", "second", None)
    assert not (tmp_path / "evil").exists() and sorted(p.name for p in (tmp_path / "s").iterdir()) == ["shard-000000.tar"]
    np.testing.assert_array_equal(listed.images[0], listed.images[1])
    assert listed.notes[0].endswith("images from the png (1) / jpg (1) / webp (1) field, captions from the txt field")


def test_a_sample_with_two_image_fields_needs_data_image_column(tmp_path: Path, pngs: Path) -> None:
    png, other = (pngs / "members" / "000.png").read_bytes(), (pngs / "members" / "001.png").read_bytes()
    write_shards(tmp_path / "s", [("a", {"jpg": other, "png": png})], per_shard=1)
    with pytest.raises(DataError, match=r"2 image fields \(jpg, png\).*data.image_column"):
        list_samples(tmp_path / "s", size=8, channels=1)
    chosen = list_samples(tmp_path / "s", size=8, channels=1, image_column="png")
    np.testing.assert_array_equal(chosen.images, list_samples(pngs / "members", size=8, channels=1).images[:1])


def test_the_same_image_in_both_sides_shards_is_an_overlap_error(tmp_path: Path, pngs: Path) -> None:
    members = pngs_as_samples(sorted((pngs / "members").glob("*.png")))
    write_shards(tmp_path / "members", members, per_shard=10)
    write_shards(tmp_path / "nonmembers", pngs_as_samples(sorted((pngs / "nonmembers").glob("*.png")))[:-1] + [("dup", members[5][1])], per_shard=10)
    (tmp_path / "model").symlink_to(pngs / "model")
    with pytest.raises(AuditInvalidError, match="shard-000000.tar:005"):
        audit(load_policy(tiny_policy(tmp_path, tmp_path / "members", tmp_path / "nonmembers")), target=leaking_target(pngs), progress=False)


def test_shard_captions_from_a_json_field_and_a_limit_subsample(tmp_path: Path, pngs: Path) -> None:
    files = sorted((pngs / "members").glob("*.png"))
    samples = [(f.stem, {"png": f.read_bytes(), "json": json.dumps({"caption": f"c{f.stem}"}).encode()}) for f in files]
    write_shards(tmp_path / "s", samples, per_shard=5)
    full = list_samples(tmp_path / "s", size=8, channels=1, caption_column="caption")
    assert full.captions[3] == "c003"
    with pytest.raises(DataError, match="no sample of the members shards .* holds a caption there"):
        list_samples(tmp_path / "s", size=8, channels=1, caption_column="captoin")
    limited = list_samples(tmp_path / "s", size=8, channels=1, caption_column="caption", limit=6, seed=4)
    folder = list_samples(pngs / "members", size=8, channels=1, limit=6, seed=4)
    np.testing.assert_array_equal(limited.indices, folder.indices)
    np.testing.assert_array_equal(limited.images, folder.images)


@pytest.fixture(scope="module")
def manifest_scores(tmp_path_factory: pytest.TempPathFactory, sd_target) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("manifest")
    result = audit(load_policy(sd_policy(tmp, SD / "members.csv", SD / "nonmembers.csv")), target=sd_target, progress=False)
    return {"members": result.attacks["loss"].member_scores, "nonmembers": result.attacks["loss"].nonmember_scores}


def sd_policy(tmp_path: Path, members: Path, nonmembers: Path) -> Path:
    return write_policy(
        tmp_path / "sd.naa.yaml",
        f"version: 1\nname: sd\nmodel: {{path: {SD / 'model'}}}\ndata: {{members: {members}, nonmembers: {nonmembers}, limit: 20}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nruntime: {device: cpu, batch_size: 16, seed: 0}\n",
    )


def test_captioned_shards_audit_like_the_manifest(tmp_path: Path, sd_target, manifest_scores) -> None:  # type: ignore[no-untyped-def]
    for side in ("members", "nonmembers"):
        with (SD / f"{side}.csv").open(encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        write_shards(tmp_path / side, [(Path(r["path"]).stem, {"png": (SD / r["path"]).read_bytes(), "txt": r["caption"].encode()}) for r in rows], per_shard=16)
    result = audit(load_policy(sd_policy(tmp_path, tmp_path / "members", tmp_path / "nonmembers")), target=sd_target, progress=False)
    assert result.conditioning.startswith("caption")
    np.testing.assert_array_equal(result.attacks["loss"].member_scores, manifest_scores["members"])
    np.testing.assert_array_equal(result.attacks["loss"].nonmember_scores, manifest_scores["nonmembers"])


def test_a_url_source_is_refused_with_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="download the shards first"):
        load_policy(write_policy(tmp_path / "p.naa.yaml", "version: 1\nmodel: {path: m}\ndata: {members: 'https://host/shard-{000..009}.tar', nonmembers: ./n}\n"))
    with pytest.raises(DataError, match="reads local files only"):
        list_samples("pipe:curl -s https://host/a.tar", size=8, channels=1)


def test_shards_naa_guard_cannot_read_surely_are_errors(tmp_path: Path, pngs: Path) -> None:
    png = (pngs / "members" / "000.png").read_bytes()
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(DataError, match="hold no samples"):
        list_samples(tmp_path / "empty.tar", size=8, channels=1)
    write_shards(tmp_path / "noimg", [("a", {"txt": b"x", "json": b"{}"})], per_shard=1)
    with pytest.raises(DataError, match="has no image field"):
        list_samples(tmp_path / "noimg", size=8, channels=1)
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(DataError, match="Cannot read the members shard"):
        list_samples(tmp_path / "bad.tar", size=8, channels=1)
    write_shards(tmp_path / "fifo", [("a", {"png": png})], per_shard=1)
    os.mkfifo(tmp_path / "fifo" / "shard-000001.tar")
    with pytest.raises(DataError, match="not a regular file"):
        list_samples(tmp_path / "fifo", size=8, channels=1)
    with pytest.raises(DataError, match="do not exist"):
        list_samples(f"{tmp_path}/fifo/shard-{{000000..000005}}.tar", size=8, channels=1)
    write_shards(tmp_path / "mixed", [("a", {"png": png})], per_shard=1)
    (tmp_path / "mixed" / "x.png").write_bytes(png)
    with pytest.raises(DataError, match="both webdataset shards"):
        list_samples(tmp_path / "mixed", size=8, channels=1)


def test_a_shard_sample_without_a_caption_is_missing_under_caption_conditioning(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    with (SD / "members.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    samples = [(Path(r["path"]).stem, {"png": (SD / r["path"]).read_bytes(), **({"txt": r["caption"].encode()} if i else {})}) for i, r in enumerate(rows)]
    write_shards(tmp_path / "members", samples, per_shard=40)
    policy = sd_policy(tmp_path, tmp_path / "members", SD / "nonmembers.csv")
    with pytest.raises(DataError, match=r"shard-000000.tar:000\) have none"):
        audit(load_policy(policy), target=sd_target, progress=False)


def test_init_recognises_shards_and_metadata_free_parquet_and_writes_what_it_found(tmp_path: Path, pngs: Path) -> None:
    from naa_guard.init_policy import write_initial_policy

    shards = {side: write_shards(tmp_path / side, [(f.stem, {"png": f.read_bytes(), "txt": b"a photo"}) for f in sorted((pngs / side).glob("*.png"))], 10) for side in ("members", "nonmembers")}
    text = write_initial_policy(pngs / "model", shards["members"], shards["nonmembers"], tmp_path / "p.naa.yaml").read_text()
    assert "webdataset shards (3 shard(s)), images from the png field, captions from the txt field, 24 samples, sizes 8x8" in text, text
    assert "fit: <" not in text  # the sizes were read from the shards' images
    load_policy(tmp_path / "p.naa.yaml")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("datasets")
    import pyarrow as pa

    for side in ("members", "nonmembers"):
        files = sorted((pngs / side).glob("*.png"))
        pq.write_table(pa.table({"key": [f.stem for f in files], "jpg": [f.read_bytes() for f in files], "caption": ["a photo"] * len(files)}), tmp_path / f"{side}.parquet")
    text = write_initial_policy(pngs / "model", tmp_path / "members.parquet", tmp_path / "nonmembers.parquet", tmp_path / "q.naa.yaml").read_text()
    assert "images from column 'jpg'" in text and "captions from 'caption'" in text, text


def test_a_caption_that_is_not_utf8_is_an_error_not_a_guess(tmp_path: Path, pngs: Path) -> None:
    write_shards(tmp_path / "s", [("a", {"png": (pngs / "members" / "000.png").read_bytes(), "txt": b"caf\xe9"})], per_shard=1)
    with pytest.raises(DataError, match="txt field is not UTF-8"):
        list_samples(tmp_path / "s", size=8, channels=1)


def test_two_processes_audit_shards_as_one_does_and_name_each_sample_shard_colon_key(tmp_path: Path, pngs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    from tolerance import assert_scores_close

    from naa_guard.cli import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    for side in ("members", "nonmembers"):
        write_shards(tmp_path / side, pngs_as_samples(sorted((pngs / side).glob("*.png"))), per_shard=7)
    (tmp_path / "model").symlink_to(pngs / "model")
    policy = tiny_policy(tmp_path, tmp_path / "members", tmp_path / "nonmembers")
    one = main(["audit", str(policy), "--quiet", "--scores", str(tmp_path / "one.csv"), "--batch-size", "5"])
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    two = subprocess.run(
        [sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2", "--chunk-size", "8", "--batch-size", "5", "--scores", str(tmp_path / "two.csv")],
        capture_output=True, text=True, cwd=repo, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert two.returncode == one, two.stdout + two.stderr
    rows = [[line.split(",") for line in (tmp_path / f"{name}.csv").read_text().splitlines()[1:]] for name in ("one", "two")]
    assert [row[:-1] for row in rows[0]] == [row[:-1] for row in rows[1]]
    assert rows[0][0][3] == f"{tmp_path / 'members' / 'shard-000000.tar'}:000"
    assert_scores_close([float(row[-1]) for row in rows[1]], [float(row[-1]) for row in rows[0]])
