"""The chunk store: a chunk is used only when it is this chunk's, under this key, intact; anything else is a miss that says why."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from naa_guard.scoring.chunks import ChunkStore, material_key

MATERIAL = ChunkStore.material_for({"model": "m" * 8, "members": "a" * 8, "attack": {"name": "naa"}}, chunk_size=8, batch_size=8, device="cpu", compile=False)
KEYS = np.arange(100, 108, dtype=np.int64)


def _saved(tmp_path: Path, scores: np.ndarray | None = None, material: dict = MATERIAL, keys: np.ndarray = KEYS) -> tuple[ChunkStore, Path]:
    store = ChunkStore(tmp_path)
    store.save(material, "members", 0, 8, keys, np.ones(len(keys)) if scores is None else scores)
    return store, store.path_for(material_key(material), "members", 0, 8)


def test_saved_chunk_loads_back_bit_for_bit(tmp_path: Path) -> None:
    scores = np.random.default_rng(0).normal(size=8)
    store, path = _saved(tmp_path, scores)
    loaded, problem = store.load(MATERIAL, "members", 0, 8, KEYS)
    assert problem is None and np.array_equal(loaded, scores)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left


def test_chunk_files_are_world_readable_like_the_score_cache(tmp_path: Path) -> None:
    """mkstemp makes files 0600: another user's chunks on a shared folder would be silent misses."""
    _, path = _saved(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_missing_chunk_is_a_quiet_miss(tmp_path: Path) -> None:
    assert ChunkStore(tmp_path).load(MATERIAL, "members", 0, 8, KEYS) == (None, None)


def _flip_a_score_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = bytearray(members["scores.npy"])
    data[-3] ^= 0x10  # a bit of the last score: still a valid float array, another number
    members["scores.npy"] = bytes(data)
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("random bytes", "cannot be read as a chunk"),
        ("truncated", "cannot be read as a chunk"),
        ("flipped byte", "integrity digest"),
        ("other samples", "other samples"),
        ("wrong length", "4 scores for a chunk of 8"),
        ("non-finite", "1 non-finite score"),
        ("old format", "not a chunk of format"),
    ],
)
def test_a_damaged_chunk_is_a_miss_with_its_reason(tmp_path: Path, damage: str, reason: str) -> None:
    scores = np.ones(8)
    if damage == "non-finite":
        scores[3] = np.nan
    keys = {"other samples": KEYS + 1, "wrong length": KEYS[:4]}.get(damage, KEYS)
    store, path = _saved(tmp_path, scores[: len(keys)], keys=keys)
    if damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(2000))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "flipped byte":
        _flip_a_score_byte(path)
    elif damage == "old format":  # the layout before chunks carried their key
        np.savez(path.with_suffix(""), keys=KEYS, scores=np.ones(8))
    loaded, problem = store.load(MATERIAL, "members", 0, 8, KEYS)
    assert loaded is None and problem is not None and reason in problem, problem


def test_a_chunk_copied_from_another_keys_folder_is_a_miss_naming_what_differs(tmp_path: Path) -> None:
    other = ChunkStore.material_for({**MATERIAL["scores"], "model": "another model"}, **{k: v for k, v in MATERIAL.items() if k != "scores"})
    store, foreign = _saved(tmp_path, np.full(8, 7.0), material=other)
    mine = store.path_for(material_key(MATERIAL), "members", 0, 8)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(foreign.read_bytes())  # same samples, same place, another model's scores
    loaded, problem = store.load(MATERIAL, "members", 0, 8, KEYS)
    assert loaded is None and problem is not None and "differs in model" in problem, problem


def test_a_chunk_moved_to_another_place_is_a_miss(tmp_path: Path) -> None:
    store, path = _saved(tmp_path)
    moved = store.path_for(material_key(MATERIAL), "nonmembers", 0, 8)
    moved.write_bytes(path.read_bytes())
    loaded, problem = store.load(MATERIAL, "nonmembers", 0, 8, KEYS)
    assert loaded is None and problem is not None and "not nonmembers 0..8" in problem


def test_keys_separate_every_setting_that_can_change_a_score() -> None:
    base = {"chunk_size": 8, "batch_size": 8, "device": "cpu", "compile": False}
    keys = {material_key(ChunkStore.material_for({"model": "a"}, **base)), material_key(ChunkStore.material_for({"model": "b"}, **base))}
    keys |= {material_key(ChunkStore.material_for({"model": "a"}, **{**base, name: value})) for name, value in [("batch_size", 4), ("device", "cuda"), ("compile", True)]}
    assert len(keys) == 5


def test_malformed_keys_and_roles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ChunkStore(tmp_path).path_for("../x", "members", 0, 8)
    with pytest.raises(ValueError, match="roles"):
        ChunkStore(tmp_path).path_for(material_key(MATERIAL), "everyone", 0, 8)
