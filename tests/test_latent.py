"""Latent text-to-image targets: a tiny Stable Diffusion pipeline that memorised its members
(tests/fixtures/tiny_sd, made by make_tiny_sd.py), a LoRA on it, random v-prediction and SDXL
pipelines, conditioning, batch-size invariance and bad input (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, write_policy
from tolerance import assert_scores_close
from tiny_sd import make_tiny_sd, write_set

from naa_guard.audit import audit, prepare_audit
from naa_guard.cli import main
from naa_guard.errors import DataError, PolicyError, TargetError
from naa_guard.policy import load_policy
from naa_guard.sweep import sweep
from naa_guard.targets import load_target, read_model_info

SD = FIXTURES / "tiny_sd"


def sd_policy(tmp_path: Path, *, members: str = "members", nonmembers: str = "nonmembers", attacks: str = "{loss: {}}", model: str = "", data: str = "", batch_size: int = 16, name: str = "sd", extra: str = "") -> Path:
    """Write a policy over the committed tiny SD fixture and return its path."""
    body = (
        f"version: 1\nname: {name}\n"
        f"model: {{path: {SD / 'model'}{model}}}\n"
        f"data: {{members: {SD / (members + '.csv')}, nonmembers: {SD / (nonmembers + '.csv')}{data}}}\n"
        f"attacks: {attacks}\n"
        "thresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\n"
        f"runtime: {{device: cpu, batch_size: {batch_size}, seed: 0}}\n"
    )
    return write_policy(tmp_path / f"{name}.naa.yaml", body + extra)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the leak and the nulls


def test_true_captions_find_the_memorised_members(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    result = audit(load_policy(sd_policy(tmp_path, attacks="{loss: {}, naa: {}}")), target=sd_target, progress=False)
    assert result.conditioning.startswith("caption")
    assert result.attacks["loss"].leakage.leak_auc >= 0.8
    assert result.attacks["naa"].leakage.leak_auc >= 0.8


def test_two_unseen_sets_stay_near_chance(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    result = audit(load_policy(sd_policy(tmp_path, members="control_a", nonmembers="control_b", attacks="{loss: {}, naa: {}}")), target=sd_target, progress=False)
    for name in ("loss", "naa"):
        assert abs(result.attacks[name].leakage.auc - 0.5) <= 0.1, name


def test_conditioning_reaches_the_unet(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    captioned = audit(load_policy(sd_policy(tmp_path)), target=sd_target, progress=False).attacks["loss"]
    empty = audit(load_policy(sd_policy(tmp_path, data=", conditioning: empty", name="empty")), target=sd_target, progress=False)
    assert empty.conditioning.startswith("empty caption") and "weak, caption-free audit" in empty.conditioning
    assert not np.array_equal(captioned.member_scores, empty.attacks["loss"].member_scores)
    # the same images under other captions: every member's caption swapped with another's
    rows = (SD / "members.csv").read_text(encoding="utf-8").splitlines()
    captions = [row.split(",", 1)[1] for row in rows[1:]]
    swapped = [f"{row.split(',', 1)[0]},{caption}" for row, caption in zip(rows[1:], captions[1:] + captions[:1])]
    shutil.copytree(SD / "members", tmp_path / "members")
    (tmp_path / "members.csv").write_text("\n".join([rows[0], *swapped]) + "\n", encoding="utf-8")
    policy = load_policy(sd_policy(tmp_path, name="swapped")).model_copy()
    policy = policy.model_copy(update={"data": policy.data.model_copy(update={"members": tmp_path / "members.csv"})})
    swapped_scores = audit(policy, target=sd_target, progress=False).attacks["loss"].member_scores
    changed = captioned.member_scores != swapped_scores
    assert changed.sum() >= len(changed) - 2  # a swap between identical captions changes nothing
    assert swapped_scores.mean() < captioned.member_scores.mean()  # the memorised caption fits best


def test_a_prompt_conditions_every_image(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    result = audit(load_policy(sd_policy(tmp_path, data=", prompt: a photo of sks scene")), target=sd_target, progress=False)
    assert result.conditioning == "prompt 'a photo of sks scene'"
    assert result.to_dict()["conditioning"] == result.conditioning


def test_every_attack_tuning_and_sweep_run_in_latent_space(tmp_path: Path, sd_target) -> None:  # type: ignore[no-untyped-def]
    attacks = "{naa: {t: [60, 100]}, loss: {}, secmi: {t_sec: 40, interval: 20}, pia: {}, pian: {}}"
    result = audit(load_policy(sd_policy(tmp_path, attacks=attacks, extra="tune: {fraction: 0.5}\n")), target=sd_target, progress=False)
    assert set(result.attacks) == {"naa", "loss", "secmi", "pia", "pian"}
    assert result.attacks["naa"].tuning is not None
    assert all(np.isfinite(a.member_scores).all() and np.isfinite(a.nonmember_scores).all() for a in result.attacks.values())
    assert result.checks is not None and result.checks.overlap is not None  # checked on the decoded pixels
    swept = sweep(load_policy(sd_policy(tmp_path, name="sweep")), "loss", {"t": [50, 200]}, progress=False)
    assert [row.params for row in swept.rows] == [{"t": 50}, {"t": 200}]


def test_scores_agree_across_batch_sizes(tmp_path: Path) -> None:
    scores = []
    for batch_size in (5, 16):
        policy = load_policy(sd_policy(tmp_path, attacks="{naa: {}}", data=", limit: 20", batch_size=batch_size, name=f"b{batch_size}"))
        scores.append(audit(policy, progress=False).attacks["naa"].member_scores)
    assert_scores_close(scores[1], scores[0])  # other batch shapes: float32 reordering only (tests/tolerance.py)


# ----------------------------------------------------------------------------- LoRA


def test_lora_on_its_members_leaks_and_the_base_alone_does_not(tmp_path: Path) -> None:
    lora = sd_policy(tmp_path, members="lora_members", model=f", lora: {SD / 'lora'}", name="lora")
    base = sd_policy(tmp_path, members="lora_members", name="base")
    off = sd_policy(tmp_path, members="lora_members", model=f", lora: {SD / 'lora' / 'pytorch_lora_weights.safetensors'}, lora_scale: 0.0", name="scale0")
    with_lora, base_alone, scale_zero = (audit(load_policy(p), progress=False).attacks["loss"] for p in (lora, base, off))
    assert with_lora.leakage.leak_auc >= 0.8
    assert abs(base_alone.leakage.auc - 0.5) <= 0.1
    assert np.array_equal(scale_zero.member_scores, base_alone.member_scores)
    assert np.array_equal(scale_zero.nonmember_scores, base_alone.nonmember_scores)


def test_the_cache_key_covers_the_lora_file_and_scale(tmp_path: Path) -> None:
    from naa_guard.attacks.loss import LossAttack
    from naa_guard.scoring.keys import cache_key

    keys = set()
    for scale, name in ((1.0, "a"), (0.5, "b")):
        policy = load_policy(sd_policy(tmp_path, model=f", lora: {SD / 'lora'}, lora_scale: {scale}", data=", limit: 20", name=name))
        prepared = prepare_audit(policy, progress=False)
        keys.add(cache_key(prepared.scorer.info, policy, LossAttack(), prepared.members, prepared.nonmembers, 4))
    base = load_policy(sd_policy(tmp_path, data=", limit: 20", name="c"))
    prepared = prepare_audit(base, progress=False)
    keys.add(cache_key(prepared.scorer.info, base, LossAttack(), prepared.members, prepared.nonmembers, 4))
    assert len(keys) == 3


def test_a_lora_that_does_not_match_the_unet_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(SD / "lora" / "pytorch_lora_weights.safetensors")
    renamed = {name.replace("down_blocks.0", "down_blocks.7"): tensor for name, tensor in tensors.items()}
    save_file(renamed, tmp_path / "other.safetensors")
    policy = sd_policy(tmp_path, model=f", lora: {tmp_path / 'other.safetensors'}", data=", limit: 20")
    assert main(["audit", str(policy), "--quiet"]) == 2
    assert "match no layer of the UNet or text encoders" in capsys.readouterr().err
    with pytest.raises(TargetError, match="pickle"):
        (tmp_path / "other.bin").write_bytes(b"x")
        audit(load_policy(sd_policy(tmp_path, model=f", lora: {tmp_path / 'other.bin'}", data=", limit: 20", name="pickle")), progress=False)


def test_a_lora_of_other_shapes_names_the_tensor_and_both_shapes(tmp_path: Path) -> None:
    """diffusers' own error here is 'Error(s) in loading state_dict for UNet2DConditionModel:' and nothing more."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(SD / "lora" / "pytorch_lora_weights.safetensors")
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight"  # cross-attention: text width 32
    tensors[name] = torch.zeros(8, 48)  # a LoRA for a base whose text encoder is 48 wide
    save_file(tensors, tmp_path / "wide.safetensors")
    with pytest.raises(TargetError) as caught:
        load_target(read_model_info(SD / "model", lora=tmp_path / "wide.safetensors"), allow_pickle=False, device="cpu", dtype="float32")
    message = str(caught.value)
    assert f"{name} is 8x48 in the file, but the layer down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k takes 8x32" in message
    assert "trained for another base" in message


def test_a_text_encoder_of_another_width_than_the_unets_cross_attention_is_named(tmp_path: Path) -> None:
    """Before, the probe's first UNet call failed with 'mat1 and mat2 shapes cannot be multiplied'
    and the message blamed the UNet's sample_size and in_channels."""
    import json

    from tiny_sd import text_encoder

    make_tiny_sd(tmp_path / "model")
    vocab = json.loads((tmp_path / "model" / "text_encoder" / "config.json").read_text())["vocab_size"]
    shutil.rmtree(tmp_path / "model" / "text_encoder")
    text_encoder(vocab, hidden=48).save_pretrained(tmp_path / "model" / "text_encoder")
    with pytest.raises(TargetError) as caught:
        read_model_info(tmp_path / "model")
    message = str(caught.value)
    assert "unet/config.json: cross_attention_dim is 32, but the text encoder gives hidden states 48 wide" in message
    assert "text_encoder/config.json hidden_size" in message and "sample_size" not in message


# ----------------------------------------------------------------------------- other pipelines


@pytest.fixture(scope="module")
def random_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sets")
    return write_set(root, "a", 20, seed=11), write_set(root, "b", 20, seed=12)


def _random_policy(tmp_path: Path, model: Path, sets: tuple[Path, Path], extra: str = "") -> Path:
    body = (
        f"version: 1\nname: r\nmodel: {{path: {model}}}\ndata: {{members: {sets[0]}, nonmembers: {sets[1]}{extra}}}\n"
        "attacks: {loss: {}, pia: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nchecks: {shift_auc: null}\n"
        "runtime: {device: cpu, batch_size: 16}\n"
    )
    return write_policy(tmp_path / "r.naa.yaml", body)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_v_and_sample_predictions_are_converted_to_epsilon(tmp_path: Path, random_sets, prediction_type: str) -> None:  # type: ignore[no-untyped-def]
    make_tiny_sd(tmp_path / "m", prediction_type=prediction_type)
    target = load_target(read_model_info(tmp_path / "m"), allow_pickle=False, device="cpu", dtype="float32")
    x0, cond = target.encode(torch.rand(2, 3, 32, 32) * 2 - 1, ["a red disc", ""])
    x = torch.randn_like(x0)
    with torch.inference_mode():
        raw = target.unet(x, torch.full((2,), 300), encoder_hidden_states=cond["encoder_hidden_states"]).sample
    abar = target.alphas_cumprod[300]
    expected = abar.sqrt() * raw + (1 - abar).sqrt() * x if prediction_type == "v_prediction" else (x - abar.sqrt() * raw) / (1 - abar).sqrt()
    torch.testing.assert_close(target.predict_noise(x, 300, cond), expected, rtol=1e-5, atol=1e-6)
    result = audit(load_policy(_random_policy(tmp_path, tmp_path / "m", random_sets)), progress=False)
    assert np.isfinite(result.attacks["pia"].member_scores).all()


def test_sdxl_uses_both_encoders_the_pooled_embedding_and_time_ids(tmp_path: Path, random_sets) -> None:  # type: ignore[no-untyped-def]
    make_tiny_sd(tmp_path / "xl", sdxl=True)
    info = read_model_info(tmp_path / "xl")
    assert info.sdxl and info.sample_size == 32
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    x0, cond = target.encode(torch.zeros(1, 3, 32, 32), ["a blue bar"])
    assert cond["encoder_hidden_states"].shape[-1] == 64  # 32 + 32: both encoders' penultimate states
    assert cond["text_embeds"].shape == (1, 32)
    assert cond["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    x = torch.randn_like(x0)
    other = {**cond, "time_ids": cond["time_ids"] * 2, "text_embeds": cond["text_embeds"]}
    assert not torch.equal(target.predict_noise(x, 100, cond), target.predict_noise(x, 100, other))  # added conditioning reaches the UNet
    result = audit(load_policy(_random_policy(tmp_path, tmp_path / "xl", random_sets)), progress=False)
    assert result.conditioning.startswith("caption") and np.isfinite(result.attacks["loss"].member_scores).all()


# ----------------------------------------------------------------------------- bad input: errors, exit 2


@pytest.mark.parametrize("component", ["vae", "tokenizer"])
def test_a_pipeline_missing_a_component_exits_2(tmp_path: Path, component: str, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(SD / "model", tmp_path / "model")
    shutil.rmtree(tmp_path / "model" / component)
    policy = sd_policy(tmp_path)
    policy.write_text(policy.read_text().replace(str(SD / "model"), str(tmp_path / "model")))
    assert main(["audit", str(policy), "--quiet"]) == 2
    assert f"missing {component}/" in capsys.readouterr().err


def test_missing_captions_under_caption_conditioning_name_the_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(SD / "members", tmp_path / "members")
    rows = (SD / "members.csv").read_text(encoding="utf-8").splitlines()
    rows[3] = rows[3].split(",")[0] + ","
    (tmp_path / "members.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    policy = sd_policy(tmp_path, data=", conditioning: caption")
    policy.write_text(policy.read_text().replace(str(SD / "members.csv"), str(tmp_path / "members.csv")))
    assert main(["audit", str(policy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "DataError" in err and "1 members row(s) (members/002.png)" in err
    policy.write_text(policy.read_text().replace(", conditioning: caption", ""))  # auto: partly captioned is refused too
    with pytest.raises(DataError, match="some samples have captions"):
        audit(load_policy(policy), progress=False)


def test_transformers_not_installed_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import builtins

    real_import = builtins.__import__

    def no_transformers(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    assert main(["audit", str(sd_policy(tmp_path, data=", limit: 20")), "--quiet"]) == 2
    assert 'pip install "naa-guard[sd]"' in capsys.readouterr().err


def test_policy_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="data.prompt is not set"):
        load_policy(sd_policy(tmp_path, data=", conditioning: prompt"))
    with pytest.raises(PolicyError, match="which ignores it"):
        load_policy(sd_policy(tmp_path, data=", prompt: x, conditioning: empty"))
    with pytest.raises(PolicyError, match="lora_scale"):
        load_policy(sd_policy(tmp_path, model=", lora_scale: -1"))


def test_text_settings_on_a_pixel_model_are_errors(tiny_setup: Path) -> None:
    text = tiny_setup.read_text()
    tiny_setup.write_text(text.replace("nonmembers: ./nonmembers.npz}", "nonmembers: ./nonmembers.npz, prompt: a cat}"))
    with pytest.raises(PolicyError, match="takes no text"):
        audit(load_policy(tiny_setup), progress=False)
    tiny_setup.write_text(text.replace("model: {path: ./model}", f"model: {{path: ./model, lora: {SD / 'lora'}}}"))
    with pytest.raises(TargetError, match="pixel-space model without a text encoder"):
        audit(load_policy(tiny_setup), progress=False)
