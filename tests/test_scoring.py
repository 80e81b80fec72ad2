"""The chunked scoring loop: memory bounded by the chunk, scores independent of chunks, compile opt-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import OVERFIT, make_tiny_model, write_policy
from tolerance import assert_scores_close
from fakes import DictCache

from naa_guard.audit import audit
from naa_guard.policy import load_policy
from naa_guard.samples import SampleSet
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.scoring.runner import chunk_bounds, chunk_size


def test_chunks_are_whole_batches_and_cover_the_set_once() -> None:
    assert chunk_size(64) == 256 and chunk_size(100) == 300 and chunk_size(1000) == 1000 and chunk_size(5, 8) == 10
    assert chunk_bounds(7, 3) == [(0, 3), (3, 6), (6, 7)] and chunk_bounds(0, 3) == []


def test_audit_never_decodes_more_than_a_chunk_and_scores_do_not_depend_on_it(tiny_setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_policy(tiny_setup)
    whole = audit(policy, progress=False, chunk_samples=1024).attacks["naa"]
    widths: list[int] = []
    real_decode = SampleSet.decode

    def recording_decode(self: SampleSet, start: int, stop: int) -> np.ndarray:
        widths.append(stop - start)
        return real_decode(self, start, stop)

    monkeypatch.setattr(SampleSet, "decode", recording_decode)
    chunked = audit(policy, progress=False, chunk_samples=5, batch_size=3).attacks["naa"]
    assert widths and max(widths) <= 6  # two batches of 3: never the whole set of 24
    assert_scores_close(chunked.member_scores, whole.member_scores)  # batches of 3, not 8: float32 reordering only
    assert_scores_close(chunked.nonmember_scores, whole.nonmember_scores)


def test_complete_chunks_regate_without_the_model(tiny_setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_policy(tiny_setup)
    store = ChunkStore(tmp_path / "chunks")
    first = audit(policy, progress=False, chunk_store=store, score_cache=DictCache())
    monkeypatch.setattr("naa_guard.scoring.models.load_target", lambda *a, **k: pytest.fail("the model was loaded although every chunk is stored"))
    second = audit(policy, progress=False, chunk_store=store)
    assert first.model_loaded and not second.model_loaded and second.attacks["naa"].cached
    assert np.array_equal(first.attacks["naa"].member_scores, second.attacks["naa"].member_scores)


def test_runtime_compile_runs_the_unet_through_torch_compile(tiny_setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    compiled: list[object] = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    policy = load_policy(tiny_setup)
    plain = audit(policy, progress=False).attacks["naa"]
    assert not compiled
    runtime = policy.runtime.model_copy(update={"compile": True})
    with_compile = audit(policy.model_copy(update={"runtime": runtime}), progress=False).attacks["naa"]
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "UNet2DModel"
    assert np.array_equal(plain.member_scores, with_compile.member_scores)


def test_model_calls_waste_no_padding_on_batch_sizes_off_the_multiple(tiny_setup: Path) -> None:
    from naa_guard.attacks.loss import LossAttack
    from naa_guard.samples import load_samples
    from naa_guard.scoring.runner import model_batch, score_samples
    from naa_guard.targets import load_target, read_model_info

    assert [model_batch(size) for size in (1, 10, 16, 17, 100, 128)] == [1, 10, 16, 16, 96, 128]
    policy = load_policy(tiny_setup)
    target = load_target(read_model_info(policy.model.path), allow_pickle=False, device="cpu", dtype="float32")
    samples = load_samples(policy.data.members, size=8, channels=1)
    odd = score_samples(LossAttack(), target, samples, "members", batch_size=20, seed=0)
    assert target.forward_calls == 2 and target.sample_queries == 24  # calls of 16 and 8 rows, not 20 and 4 padded to 32 and 16
    assert_scores_close(odd, score_samples(LossAttack(), target, samples, "members", batch_size=24, seed=0))  # other batch shapes


def _model_policy(tmp_path: Path, name: str, model: Path) -> Path:
    return write_policy(tmp_path / f"{name}.naa.yaml", f"""
        version: 1
        name: {name}
        model: {{path: {model}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}, limit: 100}}
        attacks: {{naa: {{t: 40, stride: 10, queries: 5, noise: scaled, sigma: 0.1}}}}
        thresholds: {{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}}
        runtime: {{device: cpu, batch_size: 128, seed: 0}}
        """)  # fmt: skip


def test_chunks_copied_from_another_models_store_are_recomputed_with_a_warning(tmp_path: Path) -> None:
    """Two models, one store: the null model's chunks copied over the leaking model's must not turn its FAIL into a PASS."""
    store = ChunkStore(tmp_path / "chunks")
    leaking = load_policy(_model_policy(tmp_path, "leaking", OVERFIT / "model"))
    null = load_policy(_model_policy(tmp_path, "untrained", make_tiny_model(tmp_path / "null-model")))
    first = audit(leaking, progress=False, chunk_store=store)
    assert not first.passed and first.attacks["naa"].leakage.leak_auc > 0.8
    (leaking_folder,) = {path.parent for path in store.root.rglob("*-*-*.npz")}
    assert audit(null, progress=False, chunk_store=store).passed
    (null_folder,) = {path.parent for path in store.root.rglob("*-*-*.npz")} - {leaking_folder}
    copied = sorted(path.name for path in null_folder.glob("*.npz"))
    assert copied == sorted(path.name for path in leaking_folder.glob("*.npz")) and len(copied) == 2  # one chunk per side
    for name in copied:
        (leaking_folder / name).write_bytes((null_folder / name).read_bytes())

    again = audit(leaking, progress=False, chunk_store=store)
    assert again.model_loaded and not again.passed
    assert np.array_equal(again.attacks["naa"].member_scores, first.attacks["naa"].member_scores)
    ignored = [warning for warning in again.warnings if "was ignored and recomputed" in warning]
    assert len(ignored) == 2 and all("differs in model" in warning for warning in ignored), again.warnings
