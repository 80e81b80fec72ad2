"""data.keys: the training subset of a corpus, selected per side by key from webdataset shards, a parquet
key column or a folder; absent keys and keys on both sides are errors before anything is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_shards import leaking_target, pngs, pngs_as_samples, tiny_policy, write_shards  # noqa: F401  (pngs: the module fixture)

from naa_guard.audit import audit
from naa_guard.errors import AuditInvalidError, DataError, PolicyError
from naa_guard.policy import load_policy
from naa_guard.samples import list_samples


def corpus(tmp_path: Path, pngs: Path) -> Path:  # noqa: F811
    """One shard folder holding both sides' PNGs: keys m000.. (members) and n000.. (non-members), interleaved shards."""
    samples = pngs_as_samples(sorted((pngs / "members").glob("*.png")), "m") + pngs_as_samples(sorted((pngs / "nonmembers").glob("*.png")), "n")
    return write_shards(tmp_path / "corpus", samples, per_shard=10)


def test_key_lists_select_each_side_of_one_corpus_and_audit_like_the_folders(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    source = corpus(tmp_path, pngs)
    (tmp_path / "train.txt").write_text("".join(f"m{i:03d}\n" for i in range(24)) + "\n")
    (tmp_path / "heldout.csv").write_text("key,note\n" + "".join(f"n{i:03d},x\n" for i in range(24)))
    (tmp_path / "model").symlink_to(pngs / "model")
    policy = tiny_policy(tmp_path, source, source, ", keys: {members: train.txt, nonmembers: heldout.csv}")
    target = leaking_target(pngs)
    result = audit(load_policy(policy), target=target, progress=False)
    folder = audit(load_policy(tiny_policy(pngs, pngs / "members", pngs / "nonmembers")), target=target, progress=False)
    np.testing.assert_array_equal(np.sort(result.attacks["loss"].member_scores), np.sort(folder.attacks["loss"].member_scores))
    assert result.attacks["loss"].leakage.auc == folder.attacks["loss"].leakage.auc
    assert not result.passed


def test_keys_select_before_the_seeded_limit_in_folders_and_parquet(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    (tmp_path / "k.txt").write_text("003\n005\n007\n011\n")
    listed = list_samples(pngs / "members", size=8, channels=1, keys=tmp_path / "k.txt")
    assert listed.names == ("003.png", "005.png", "007.png", "011.png")
    limited = list_samples(pngs / "members", size=8, channels=1, keys=tmp_path / "k.txt", limit=2, seed=1)
    assert len(limited) == 2 and set(limited.names) <= set(listed.names)
    pytest.importorskip("datasets")
    from test_parquet_writers import write_parquet

    path = write_parquet(tmp_path / "m.parquet", sorted((pngs / "members").glob("*.png")), "img2dataset")
    assert list(list_samples(path, size=8, channels=1, keys=tmp_path / "k.txt").indices) == [3, 5, 7, 11]


def test_a_key_naming_no_sample_is_an_error_listing_some(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    source = corpus(tmp_path, pngs)
    (tmp_path / "k.txt").write_text("m001\nm999\nzz\n")
    with pytest.raises(DataError, match=r"names 2 key\(s\) that name no sample.*m999, zz"):
        list_samples(source, size=8, channels=1, keys=tmp_path / "k.txt")


def test_a_key_on_both_sides_is_an_overlap_error_before_scoring(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    source = corpus(tmp_path, pngs)
    (tmp_path / "a.txt").write_text("m000\nm001\n")
    (tmp_path / "b.txt").write_text("n000\nm001\n")
    (tmp_path / "model").symlink_to(pngs / "model")
    policy = load_policy(tiny_policy(tmp_path, source, source, ", keys: {members: a.txt, nonmembers: b.txt}"))
    with pytest.raises(AuditInvalidError, match=r"1 key\(s\) for both the members .* m001"):
        audit(policy, target=leaking_target(pngs), progress=False)


def test_one_key_list_for_both_sides_is_a_policy_error(tmp_path: Path, pngs: Path) -> None:  # noqa: F811
    with pytest.raises(PolicyError, match="one key list per side"):
        load_policy(tiny_policy(tmp_path, pngs / "members", pngs / "nonmembers", ", keys: k.txt"))
