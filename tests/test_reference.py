"""model.reference: calibrated scores (target minus reference, same seeded noise), the compatibility check, the keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model, make_tiny_setup
from fakes import DictCache

from naa_guard import load_policy
from naa_guard.audit import audit
from naa_guard.errors import PolicyError, TargetError
from naa_guard.scoring import runner

POLICY_ARGS = {"attacks": "{loss: {t: 100}, naa: {}}", "thresholds": "{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}"}


def _with_reference(policy: Path, reference: str) -> Path:
    text = policy.read_text().replace("model: {path: ./model}", f"model: {{path: ./model, reference: {reference}}}")
    policy.write_text(text)
    return policy



def test_a_reference_reports_every_attack_raw_and_calibrated_with_the_same_noise(tmp_path: Path) -> None:
    policy = _with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "./model")
    result = audit(load_policy(policy), progress=False)
    assert list(result.attacks) == ["loss", "loss/ref", "naa", "naa/ref"]
    # the model is its own reference: the same seeded noise on both sides leaves exactly nothing
    for name in ("loss/ref", "naa/ref"):
        calibrated = result.attacks[name]
        assert not calibrated.member_scores.any() and not calibrated.nonmember_scores.any()
        assert calibrated.queries_per_sample == 2 * result.attacks[name.removesuffix("/ref")].queries_per_sample
    assert {gate.attack for gate in result.gates} == {"loss", "loss/ref", "naa", "naa/ref"}  # gates apply to both

    make_tiny_model(tmp_path / "other", seed=5)
    result = audit(load_policy(_with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "./other")), progress=False)
    raw, calibrated = result.attacks["loss"], result.attacks["loss/ref"]
    alone = audit(load_policy(make_tiny_setup(tmp_path / "alone", **POLICY_ARGS).parent / "tiny.naa.yaml"), progress=False)
    make_tiny_model(tmp_path / "alone" / "model", seed=5)  # the reference audited on its own, same sets and seed
    other = audit(load_policy(tmp_path / "alone" / "tiny.naa.yaml"), progress=False)
    np.testing.assert_array_equal(raw.member_scores, alone.attacks["loss"].member_scores)
    np.testing.assert_array_equal(calibrated.member_scores, raw.member_scores - other.attacks["loss"].member_scores)
    np.testing.assert_array_equal(calibrated.nonmember_scores, raw.nonmember_scores - other.attacks["loss"].nonmember_scores)


def test_a_reference_of_another_architecture_is_refused_before_scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scored: list[object] = []
    monkeypatch.setattr(runner, "score_chunk", lambda *args, **kwargs: scored.append(args))
    make_tiny_model(tmp_path / "wide", sample_size=16)
    policy = _with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "./wide")
    with pytest.raises(TargetError, match="sample_size: 8 vs 16"):
        audit(load_policy(policy), progress=False)
    make_tiny_model(tmp_path / "cosine", index=False)
    (tmp_path / "cosine" / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}')
    with pytest.raises(TargetError, match="noise schedules differ"):
        audit(load_policy(_with_reference(make_tiny_setup(tmp_path / "b", **POLICY_ARGS), str(tmp_path / "cosine"))), progress=False)
    assert scored == []


def test_the_reference_changes_the_cache_key_of_the_calibrated_scores(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "other", seed=5)
    cache = DictCache()
    policy = _with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "./model")
    first = audit(load_policy(policy), progress=False, score_cache=cache)
    keys = set(cache.entries)
    policy.write_text(policy.read_text().replace("reference: ./model", "reference: ./other"))
    second = audit(load_policy(policy), progress=False, score_cache=cache)
    assert set(cache.entries) > keys  # the other reference's scores were computed, not taken from the first
    assert second.model_loaded and not np.array_equal(first.attacks["loss/ref"].member_scores, second.attacks["loss/ref"].member_scores)
    again = audit(load_policy(policy), progress=False, score_cache=cache)
    assert not again.model_loaded and all(result.cached for result in again.attacks.values())
    np.testing.assert_array_equal(again.attacks["loss/ref"].member_scores, second.attacks["loss/ref"].member_scores)


def test_reference_base_needs_a_lora_and_a_loader_takes_no_reference(tmp_path: Path) -> None:
    policy = _with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "base")
    with pytest.raises(PolicyError, match="model.lora"):
        load_policy(policy)
    policy.write_text(policy.read_text().replace("model: {path: ./model, reference: base}", "model: {loader: 'tests.fakes:loader', reference: ./model}"))
    with pytest.raises(PolicyError, match="model.loader"):
        load_policy(policy)


def test_the_reports_show_the_calibrated_rows_beside_the_raw_ones(tmp_path: Path) -> None:
    from naa_guard.reports.write import write_reports

    policy = _with_reference(make_tiny_setup(tmp_path, **POLICY_ARGS), "./model")
    result = audit(load_policy(policy), progress=False)
    write_reports(result, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "loss/ref" in html and "naa/ref" in html
    assert (tmp_path / "out" / "scores_loss-ref.png").is_file()


def test_a_lora_that_memorised_its_members_is_caught_with_the_base_as_reference_where_the_raw_attack_is_not(tmp_path: Path) -> None:
    """The tiny SD fixture's LoRA (trained on lora_members) at scale 0.3 on its base (which memorised
    `members`). The non-members are 20 held-out images and 20 images the *base* memorised: those are
    easy for any model derived from the base, so the raw loss ranks them with the LoRA's members and
    the raw AUC stays near 0.5 (measured 0.445); the base scores them just as low, so the calibrated
    loss isolates what the LoRA memorised (measured 0.990)."""
    import csv
    import shutil

    import torch

    sd = Path(__file__).parent / "fixtures" / "tiny_sd"
    rows = []
    (tmp_path / "mixed").mkdir()
    for name in ("members", "nonmembers"):
        with (sd / f"{name}.csv").open(newline="") as handle:
            for row in list(csv.DictReader(handle))[:20]:
                copied = f"mixed/{name}_{Path(row['path']).name}"
                shutil.copy(sd / row["path"], tmp_path / copied)
                rows.append((copied, row["caption"]))
    with (tmp_path / "mixed.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "caption"), *rows])
    policy = tmp_path / "lora.naa.yaml"
    policy.write_text(
        "version: 1\nname: lora-ref\n"
        f"model: {{path: {sd / 'model'}, lora: {sd / 'lora'}, lora_scale: 0.3, reference: base}}\n"
        f"data: {{members: {sd / 'lora_members.csv'}, nonmembers: ./mixed.csv, conditioning: caption}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.8, tpr_at_1pct_fpr: null, decision: point}\n"
        "runtime: {device: cpu, batch_size: 16, seed: 0}\nchecks: {shift_auc: null}\n"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = audit(load_policy(policy), progress=False)
    finally:
        torch.set_num_threads(threads)
    status = {gate.attack: gate.status for gate in result.gates}
    assert status == {"loss": "pass", "loss/ref": "fail"}, (result.attacks["loss"].leakage.leak_auc, result.attacks["loss/ref"].leakage.leak_auc)
    assert result.attacks["loss"].leakage.leak_auc < 0.7 and result.attacks["loss/ref"].leakage.leak_auc > 0.9
    assert not result.passed
