"""The chunk store: a chunk is used only when it holds exactly the expected samples' finite scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from naa_guard.scorestore import ChunkStore

KEY = ChunkStore.key_for("ab" * 32, chunk_size=8, batch_size=8, device="cpu", compile=False)
KEYS = np.arange(100, 108, dtype=np.int64)


def test_saved_chunk_loads_back_bit_for_bit(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path)
    scores = np.random.default_rng(0).normal(size=8)
    store.save(KEY, "members", 0, 8, KEYS, scores)
    assert np.array_equal(store.load(KEY, "members", 0, 8, KEYS), scores)
    assert [p.name for p in (tmp_path / KEY).iterdir()] == ["members-000000000-000000008.npz"]  # no temporary left


@pytest.mark.parametrize("damage", ["other samples", "non-finite", "truncated", "missing"])
def test_a_chunk_that_does_not_match_is_a_miss(tmp_path: Path, damage: str) -> None:
    store = ChunkStore(tmp_path)
    scores = np.ones(8)
    if damage == "non-finite":
        scores[3] = np.nan
    if damage != "missing":
        store.save(KEY, "members", 0, 8, KEYS + (1 if damage == "other samples" else 0), scores)
    if damage == "truncated":
        path = store.path_for(KEY, "members", 0, 8)
        path.write_bytes(path.read_bytes()[:40])
    assert store.load(KEY, "members", 0, 8, KEYS) is None


def test_keys_separate_every_setting_that_can_change_a_score() -> None:
    base = {"chunk_size": 8, "batch_size": 8, "device": "cpu", "compile": False}
    keys = {ChunkStore.key_for("ab" * 32, **base), ChunkStore.key_for("cd" * 32, **base)}
    keys |= {ChunkStore.key_for("ab" * 32, **{**base, name: value}) for name, value in [("batch_size", 4), ("device", "cuda"), ("compile", True)]}
    assert len(keys) == 5


def test_malformed_keys_and_roles_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ChunkStore(tmp_path).path_for("../x", "members", 0, 8)
    with pytest.raises(ValueError, match="roles"):
        ChunkStore(tmp_path).path_for(KEY, "everyone", 0, 8)
