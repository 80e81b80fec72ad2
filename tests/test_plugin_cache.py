"""Tests of pytest_plugin/cache.py: the score cache over a folder."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from pytest_plugin.cache import DirectoryScoreCache

KEY = "ab" * 32


def _scores(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"members": rng.normal(size=30), "nonmembers": rng.normal(size=50)}


def test_put_then_get_returns_the_same_scores(tmp_path: Path) -> None:
    cache = DirectoryScoreCache(tmp_path)
    scores = _scores(0)
    cache.put(KEY, scores)
    got = cache.get(KEY)
    assert got is not None
    np.testing.assert_array_equal(got["members"], scores["members"])
    np.testing.assert_array_equal(got["nonmembers"], scores["nonmembers"])
    assert got["members"].dtype == np.float64


def test_unknown_key_is_a_miss(tmp_path: Path) -> None:
    assert DirectoryScoreCache(tmp_path / "not-made-yet").get(KEY) is None


def test_damaged_entry_is_a_miss_and_is_overwritten(tmp_path: Path) -> None:
    cache = DirectoryScoreCache(tmp_path)
    cache.path_for(KEY).write_bytes(b"PK\x03\x04 truncated")
    assert cache.get(KEY) is None
    cache.put(KEY, _scores(1))
    assert cache.get(KEY) is not None


def test_put_leaves_only_the_entry_behind(tmp_path: Path) -> None:
    cache = DirectoryScoreCache(tmp_path)
    cache.put(KEY, _scores(0))
    assert [path.name for path in tmp_path.iterdir()] == [f"{KEY}.npz"]


def test_keys_that_are_not_hex_digests_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex"):
        DirectoryScoreCache(tmp_path).get("../../etc/passwd")


def test_concurrent_writers_of_one_key_leave_a_complete_entry(tmp_path: Path) -> None:
    cache = DirectoryScoreCache(tmp_path)
    written = [_scores(seed) for seed in range(8)]
    threads = [threading.Thread(target=cache.put, args=(KEY, scores)) for scores in written]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = cache.get(KEY)
    assert got is not None
    assert any(np.array_equal(got["members"], scores["members"]) for scores in written)
    assert [path.name for path in tmp_path.iterdir()] == [f"{KEY}.npz"]
