"""A latent model's encodings are computed once per chunk and stored; every image is decoded once
(issue 18, items 1 and 3): a second attack, a tuning candidate or a new process calls neither the
VAE nor the text encoder, the scores agree with and without stored encodings, a
damaged file is never used, and a re-gate of unchanged data decodes no image at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, make_images, make_tiny_model, write_policy
from tolerance import assert_scores_close

from naa_guard import audit as audit_module
from naa_guard.audit import audit
from naa_guard.errors import AuditInvalidError
from naa_guard.policy import load_policy
from naa_guard.samples import SampleSet
from naa_guard.scoring import runner
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.latent import LatentTarget

SD = FIXTURES / "tiny_sd"
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def sd_policy(tmp_path: Path, attacks: str, *, name: str = "enc", limit: int = 20, extra: str = "") -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"version: 1\nname: {name}\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, limit: {limit}}}\n"
        f"attacks: {attacks}\nthresholds: {{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}}\n"
        f"runtime: {{device: cpu, batch_size: 8, seed: 0}}\n{extra}",
    )


def fresh_target() -> LatentTarget:
    return load_target(read_model_info(SD / "model"), allow_pickle=False, device="cpu", dtype="float32")  # type: ignore[return-value]


class EncoderSpy:
    """Records every VAE and text encoder call, and whether the sample pass (the checks) was over."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, target: LatentTarget) -> None:
        self.checked = False
        self.calls: list[tuple[str, bool, int]] = []  # (encoder, after the checks, samples)
        encode_images, encode_texts, check_samples = target._encode_images, target._encode_texts, audit_module.check_samples

        def images(pixels):  # type: ignore[no-untyped-def]
            self.calls.append(("vae", self.checked, len(pixels)))
            return encode_images(pixels)

        def texts(batch):  # type: ignore[no-untyped-def]
            self.calls.append(("text", self.checked, len(batch)))
            return encode_texts(batch)

        def checks(*args, **kwargs):  # type: ignore[no-untyped-def]
            report = check_samples(*args, **kwargs)
            self.checked = True
            return report

        monkeypatch.setattr(target, "_encode_images", images)
        monkeypatch.setattr(target, "_encode_texts", texts)
        monkeypatch.setattr(audit_module, "check_samples", checks)

    def encoded(self, encoder: str, *, after_checks: bool) -> int:
        return sum(count for name, after, count in self.calls if name == encoder and after == after_checks)


@pytest.mark.parametrize("store", [False, True], ids=["without a store", "with a chunk store"])
def test_a_second_attack_calls_neither_the_vae_nor_the_text_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: bool) -> None:
    target = fresh_target()
    spy = EncoderSpy(monkeypatch, target)
    result = audit(load_policy(sd_policy(tmp_path, "{loss: {}, pia: {}}")), target=target, progress=False, chunk_store=ChunkStore(tmp_path / "chunks") if store else None)
    assert set(result.attacks) == {"loss", "pia"}
    assert spy.encoded("vae", after_checks=False) == 40  # every member and non-member once, in the sample pass
    assert spy.encoded("vae", after_checks=True) == 0 and spy.encoded("text", after_checks=True) == 0  # neither attack encodes
    assert spy.encoded("text", after_checks=False) > 0


def test_tuning_candidates_share_the_encodings_of_their_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = fresh_target()
    spy = EncoderSpy(monkeypatch, target)
    policy = load_policy(sd_policy(tmp_path, "{loss: {t: [50, 200, 400]}}", limit=40, extra="tune: {fraction: 0.5}\n"))
    result = audit(policy, target=target, progress=False)
    assert result.attacks["loss"].tuning is not None
    # three candidates on the calibration half, the choice on the evaluation half: each image is encoded once
    assert spy.encoded("vae", after_checks=True) == 80


NEW_PROCESS = """
import json, sys, torch
torch.set_num_threads(1)
from naa_guard.audit import audit
from naa_guard.errors import AuditInvalidError
from naa_guard.policy import load_policy
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.targets import load_target, read_model_info
target = load_target(read_model_info(sys.argv[1]), allow_pickle=False, device="cpu", dtype="float32")
result = audit(load_policy(sys.argv[2]), target=target, progress=False, chunk_store=ChunkStore(sys.argv[3]))
pia = result.attacks["pia"]
print(json.dumps({"images": target.encoded_images, "texts": target.encoded_texts, "members": pia.member_scores.tolist(), "nonmembers": pia.nonmember_scores.tolist()}))
"""


def test_a_new_process_reads_the_stored_encodings_and_scores_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "chunks"
    audit(load_policy(sd_policy(tmp_path, "{loss: {}}", name="first")), target=fresh_target(), progress=False, chunk_store=ChunkStore(store))
    assert list((store / "encodings").glob("*.npz")), "the first audit stored no encodings"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    second = subprocess.run(
        [sys.executable, "-c", NEW_PROCESS, str(SD / "model"), str(sd_policy(tmp_path, "{pia: {}}", name="second")), str(store)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    read = json.loads(second.stdout.strip().splitlines()[-1])
    assert (read["images"], read["texts"]) == (0, 0)  # a new process: no VAE or text encoder call

    # Without stored encodings: every batch encoded on the fly, as a target that cannot store them is scored.
    monkeypatch.setattr(runner, "stores_encodings", lambda target: False)
    monkeypatch.setattr(audit_module, "_first_pass_encodings", lambda *args: None)
    direct = audit(load_policy(sd_policy(tmp_path, "{pia: {}}", name="direct")), target=fresh_target(), progress=False).attacks["pia"]
    # another process, and encodings read back rather than computed in the batch: float32 reordering only
    assert_scores_close(read["members"], direct.member_scores)
    assert_scores_close(read["nonmembers"], direct.nonmember_scores)


def test_a_damaged_encodings_file_is_never_used(tmp_path: Path) -> None:
    store = tmp_path / "chunks"
    first = audit(load_policy(sd_policy(tmp_path, "{loss: {}}", name="first")), target=fresh_target(), progress=False, chunk_store=ChunkStore(store))
    files = sorted((store / "encodings").glob("*.npz"))
    assert len(files) == 2  # one chunk per side
    for file in files:
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    target = fresh_target()
    again = audit(load_policy(sd_policy(tmp_path, "{loss: {}, sima: {}}", name="again")), target=target, progress=False, chunk_store=ChunkStore(store))
    assert target.encoded_images == 40  # computed again, not read
    ignored = [warning for warning in again.warnings if "stored encodings ignored and computed again" in warning]
    assert len(ignored) == 2, again.warnings  # a damaged zip or digest; in the audit's own warnings (and so its reports), one per damaged file
    assert np.array_equal(again.attacks["loss"].member_scores, first.attacks["loss"].member_scores)


class DecodeSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chunks: list[tuple[int, int]] = []
        decode = SampleSet.decode

        def spy(samples: SampleSet, start: int, stop: int) -> np.ndarray:
            if stop - start > 1:  # one row at a time: the report's pictures of its most exposed members (report.exposed)
                self.chunks.append((start, stop))
            return decode(samples, start, stop)

        monkeypatch.setattr(SampleSet, "decode", spy)


def test_each_image_of_a_latent_audit_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = DecodeSpy(monkeypatch)
    audit(load_policy(sd_policy(tmp_path, "{loss: {}, pia: {}}")), target=fresh_target(), progress=False)
    assert spy.chunks == [(0, 20), (0, 20)]  # the members' chunk and the non-members': the checks and both attacks read them once


def test_a_regate_of_unchanged_data_decodes_no_image_and_keeps_the_notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tiny_model(tmp_path / "model")
    make_images(tmp_path / "members.npz", 24, size=12, seed=1)  # the model takes 8x8: every image is fitted, and noted
    make_images(tmp_path / "nonmembers.npz", 24, size=12, seed=2)
    policy = load_policy(write_policy(
        tmp_path / "fit.naa.yaml",
        "version: 1\nname: fit\nmodel: {path: ./model}\ndata: {members: ./members.npz, nonmembers: ./nonmembers.npz, fit: resize}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}\nruntime: {device: cpu, batch_size: 8, seed: 0}\n",
    ))  # fmt: skip
    store = ChunkStore(tmp_path / "chunks")
    first = audit(policy, progress=False, chunk_store=store)
    assert any("fitted" in warning for warning in first.warnings)
    spy = DecodeSpy(monkeypatch)
    again = audit(policy, progress=False, chunk_store=store)
    assert spy.chunks == [] and not again.model_loaded
    assert again.warnings == first.warnings  # the decoding notes come back with the stored summaries
    assert again.checks is not None and first.checks is not None and again.checks.to_dict() == first.checks.to_dict()


def test_summaries_copied_from_another_data_set_cannot_hide_an_overlap(tmp_path: Path) -> None:
    """A store's summaries stand in for decoding on a re-gate: a clean set's copied over an overlapping set's must change nothing."""
    make_tiny_model(tmp_path / "model")

    def setup(name: str, overlapping: bool) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        make_images(folder / "members.npz", 24, seed=1)
        make_images(folder / "nonmembers.npz", 24, seed=1 if overlapping else 2)  # seed 1: the members themselves
        return write_policy(
            folder / "p.naa.yaml",
            f"version: 1\nname: {name}\nmodel: {{path: {tmp_path / 'model'}}}\ndata: {{members: ./members.npz, nonmembers: ./nonmembers.npz}}\n"
            "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}\nruntime: {device: cpu, batch_size: 8, seed: 0}\n",
        )

    overlapping, clean = load_policy(setup("overlapping", True)), load_policy(setup("clean", False))
    stores = {name: ChunkStore(tmp_path / f"store-{name}") for name in ("overlapping", "clean")}
    with pytest.raises(AuditInvalidError, match="identical"):
        audit(overlapping, progress=False, chunk_store=stores["overlapping"])
    audit(clean, progress=False, chunk_store=stores["clean"])
    theirs = sorted((stores["overlapping"].root / "summaries").glob("*.npz"))
    ours = sorted((stores["clean"].root / "summaries").glob("*.npz"))
    assert len(theirs) == len(ours) == 2  # one chunk per side
    for target, source in zip(theirs, ours):
        target.write_bytes(source.read_bytes())  # the clean set's digests under the overlapping set's keys
    with pytest.raises(AuditInvalidError, match="identical"):
        audit(overlapping, progress=False, chunk_store=stores["overlapping"])
