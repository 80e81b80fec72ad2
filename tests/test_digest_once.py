"""Model files are hashed once per audit, also when the encodings' key and the scores' key name the same files.

A spy counts the opens that the digest code makes per file (never wall time); the digests keep the
value they had when each list was read on its own.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, write_policy

from naa_guard.audit import audit
from naa_guard.policy import load_policy
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.samples import files_digest, reuse_file_digests
from naa_guard.targets import load_target, read_model_info

SD = FIXTURES / "tiny_sd"
pytestmark = pytest.mark.usefixtures("one_thread")


def count_digest_reads(monkeypatch: pytest.MonkeyPatch) -> dict[Path, int]:
    """Count, per file, the binary opens made by naa_guard/samples/digests.py."""
    reads: dict[Path, int] = {}
    original = Path.open

    def spy(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_code.co_filename
        if "b" in mode and Path(caller).as_posix().endswith("naa_guard/samples/digests.py"):
            reads[Path(self)] = reads.get(Path(self), 0) + 1
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    return reads


def reference_digest(files: list[Path]) -> str:
    """The documented key format: sha256 over (name, size, content) of the files sorted by path."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda p: p.as_posix()):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode() + file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("store", [True, False], ids=["with a chunk store", "without"])
def test_a_latent_audit_reads_each_model_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: bool) -> None:
    info = read_model_info(SD / "model")
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    reads = count_digest_reads(monkeypatch)
    policy = write_policy(
        tmp_path / "once.naa.yaml",
        f"version: 1\nname: once\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, limit: 20}}\n"
        "attacks: {loss: {}, sima: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}\n"
        "runtime: {device: cpu, batch_size: 16, seed: 0}\n",
    )
    audit(load_policy(policy), target=target, progress=False, chunk_store=ChunkStore(tmp_path / "chunks") if store else None)
    model_files, encoders = info.identity_files(), info.encoder_files()
    assert set(encoders) < set(model_files)  # the encodings' key reads a part of the scores' key's files
    if store:  # both keys: every file once
        assert {file: reads.get(file, 0) for file in model_files} == {file: 1 for file in model_files}
    else:  # no score key: the UNet's files are not read for a key nobody needs
        assert {file: reads.get(file, 0) for file in model_files} == {file: int(file in encoders) for file in model_files}


def test_digests_read_in_one_pass_equal_each_list_read_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from naa_guard.samples.digests import expect_file_lists

    info = read_model_info(SD / "model")
    every, encoders = info.identity_files(), info.encoder_files()
    alone = (files_digest(every), files_digest(encoders))  # outside an audit: each list read on its own
    assert alone == (reference_digest(every), reference_digest(encoders))
    reads = count_digest_reads(monkeypatch)
    with reuse_file_digests():
        expect_file_lists(every, encoders)
        together = (files_digest(reversed(every)), files_digest(encoders))  # the caller's order never matters
    assert together == alone
    assert set(reads) == set(every) and set(reads.values()) == {1}
