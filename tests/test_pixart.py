"""PixArt-Sigma / PixArt-Alpha: a DDPM noise-prediction DiT read as a latent target of the UNet families."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tiny_pixart import make_tiny_pixart
from test_flow import _policy as flow_policy
from tolerance import assert_scores_close
from naa_guard.attacks import get_attack
from naa_guard.attacks.common import forward_noise, sample_keys, seeded_noise
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.base import padding_rows, probe_target
from naa_guard.targets.pixart import PixArtTarget

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["A Red disc at the LEFT on white  ", "a blue bar at the top on black", "", "a green square at the centre on teal"]


@pytest.fixture(scope="module")
def pixart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pixart") / "model"
    make_tiny_pixart(folder)
    return folder


@pytest.fixture(scope="module")
def target(pixart: Path) -> PixArtTarget:
    loaded = load_target(read_model_info(pixart), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(loaded, "tiny pixart")
    assert isinstance(loaded, PixArtTarget)
    return loaded


@pytest.fixture(scope="module")
def batch(target: PixArtTarget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target.encode(images, CAPTIONS)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert_scores_close(got.numpy(), want.numpy(), relative=1e-4)


def _encode_prompt(folder: Path, texts: list[str], alpha: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's own encode_prompt on the same padded batch our target encodes (so the T5 call has the same shape)."""
    from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

    pipeline = (PixArtAlphaPipeline if alpha else PixArtSigmaPipeline).from_pretrained(folder)
    with torch.no_grad():  # as the pipeline's __call__ runs it (autograd would pick another attention kernel)
        embeds, mask, _, _ = pipeline.encode_prompt(texts + [""] * padding_rows(len(texts)), do_classifier_free_guidance=False)
    return embeds[: len(texts)], mask[: len(texts)]


def test_the_condition_is_the_pipelines_own_encode_prompt_bit_for_bit(pixart: Path, batch) -> None:  # type: ignore[no-untyped-def]
    embeds, mask = _encode_prompt(pixart, CAPTIONS)
    x0, cond = batch
    assert cond["encoder_hidden_states"].shape == (len(CAPTIONS), 300, 80)  # Sigma: max_sequence_length 300
    assert torch.equal(cond["encoder_hidden_states"], embeds) and torch.equal(cond["encoder_attention_mask"], mask.float())
    assert int(mask[2].sum()) == 1  # the empty caption: the end token only; the mask hides the padding from the transformer
    assert x0.shape == (len(CAPTIONS), 4, 8, 8)


def test_an_alpha_pipeline_encodes_120_tokens_as_its_encode_prompt(tmp_path: Path) -> None:
    make_tiny_pixart(tmp_path / "alpha", alpha=True)
    info = read_model_info(tmp_path / "alpha")
    assert info.max_sequence_length == 120 and not info.size_conditioned
    loaded = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    _, cond = loaded.encode(torch.zeros(len(CAPTIONS), 3, 32, 32), CAPTIONS)
    embeds, mask = _encode_prompt(tmp_path / "alpha", CAPTIONS, alpha=True)
    assert cond["encoder_hidden_states"].shape == (len(CAPTIONS), 120, 80)
    assert torch.equal(cond["encoder_hidden_states"], embeds) and torch.equal(cond["encoder_attention_mask"], mask.float())


def transformer_call(target: PixArtTarget, x_t: torch.Tensor, t: int, cond: dict[str, torch.Tensor], **added: torch.Tensor | None) -> torch.Tensor:
    """The transformer called by hand as PixArtSigmaPipeline calls it: integer t, T5 states and mask, added_cond_kwargs."""
    with torch.inference_mode():
        return target.transformer(
            x_t, encoder_hidden_states=cond["encoder_hidden_states"], encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=torch.full((x_t.shape[0],), t, dtype=torch.long), added_cond_kwargs={"resolution": None, "aspect_ratio": None, **added}, return_dict=False,
        )[0].float()  # fmt: skip


def test_the_noise_prediction_is_the_first_half_of_the_learned_sigma_output(pixart: Path, target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    from diffusers import DPMSolverMultistepScheduler

    x0, cond = batch
    out = transformer_call(target, x0, 300, cond)
    assert out.shape == (len(CAPTIONS), 8, 8, 8)  # noise and variance
    close(target.predict_noise(x0, 300, cond), out[:, :4])
    scheduler = DPMSolverMultistepScheduler.from_pretrained(pixart / "scheduler")
    assert torch.equal(target.alphas_cumprod, torch.as_tensor(scheduler.alphas_cumprod).float())
    assert "learned-sigma" in read_model_info(pixart).parametrization()


def test_an_alpha_at_sample_size_128_gets_the_resolution_and_aspect_ratio(tmp_path: Path) -> None:
    make_tiny_pixart(tmp_path / "alpha", alpha=True, sample_size=128)  # PixArt-Alpha 1024: use_additional_conditions
    info = read_model_info(tmp_path / "alpha")
    assert info.size_conditioned and info.sample_size == 512
    loaded = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    _, cond = loaded.encode(torch.zeros(2, 3, 32, 32), CAPTIONS[:2])
    want = transformer_call(loaded, x_t, 400, cond, resolution=torch.tensor([[512.0, 512.0]] * 2), aspect_ratio=torch.ones(2, 1))[:, :4]
    close(loaded.predict_noise(x_t, 400, cond), want)
    other = transformer_call(loaded, x_t, 400, cond, resolution=torch.tensor([[256.0, 256.0]] * 2), aspect_ratio=torch.ones(2, 1))[:, :4]
    assert not torch.allclose(want, other, atol=1e-4)  # the input is pinned, not incidental


def build_attack(name: str, params: dict):  # type: ignore[no-untyped-def,type-arg]
    cls = get_attack(name)
    return cls(cls.Params(**params))


def attack_scores(target: PixArtTarget, name: str, params: dict, x0: torch.Tensor, cond) -> torch.Tensor:  # type: ignore[no-untyped-def,type-arg]
    return build_attack(name, params).score(target, x0, sample_keys("members", list(range(x0.shape[0]))), 7, cond)


def test_loss_is_the_ddpm_noise_error_on_the_schedulers_alphas(target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "loss.noise", x0.device)
    x_t = forward_noise(x0, target.alphas_cumprod[200], e)
    want = -((transformer_call(target, x_t, 200, cond)[:, :4] - e).double() ** 2).flatten(1).sum(1)
    close(attack_scores(target, "loss", {"t": 200}, x0, cond), want)


def test_sima_is_the_noise_norm_at_the_clean_latent(target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    want = -(transformer_call(target, x0, 50, cond)[:, :4].double().abs() ** 4).flatten(1).sum(1)
    close(attack_scores(target, "sima", {"t": 50}, x0, cond), want)


def test_pia_uses_the_deterministic_noise_at_t_0(target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e0 = transformer_call(target, x0, 0, cond)[:, :4]
    x_t = forward_noise(x0, target.alphas_cumprod[300], e0)
    want = -((e0 - transformer_call(target, x_t, 300, cond)[:, :4]).double().abs() ** 4).flatten(1).sum(1)
    close(attack_scores(target, "pia", {"t": 300}, x0, cond), want)


@pytest.mark.parametrize("name", ["pia", "naa", "secmi"])
def test_the_other_attacks_run_and_do_not_depend_on_the_batch(target: PixArtTarget, batch, name: str) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    whole = attack_scores(target, name, {}, x0, cond)
    halves = torch.cat([build_attack(name, {}).score(target, x0[i : i + 2], sample_keys("members", [i, i + 1]), 7, {k: v[i : i + 2] for k, v in cond.items()}) for i in (0, 2)])
    assert torch.isfinite(whole).all()
    close(halves, whole)


def _policy(tmp_path: Path, model: Path, attacks: str = "{loss: {}, sima: {}, pia: {}, naa: {}, secmi: {}}", extra: str = "", count: int = 20) -> Path:
    """Return the SD3 tests' policy (test_flow._policy) for this model, with every attack by default."""
    return flow_policy(tmp_path, model, attacks, extra, count)


def test_a_pixart_folder_is_audited_end_to_end_with_its_captions_and_a_reference(tmp_path: Path, pixart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "base"
    make_tiny_pixart(reference, seed=5)
    code = main(["audit", str(_policy(tmp_path, pixart, extra=f", reference: {reference}")), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    text = json.dumps(report)
    assert "pixart" in text and "300 tokens" in text and "/ref" in text
    assert {"loss", "sima", "pia", "naa", "secmi"} <= set(report["attacks"])


def test_a_pixart_model_that_memorised_its_members_fails_the_gate(tmp_path: Path, pixart: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A denoiser that predicts the noise toward the nearest member (a perfectly memorising model) must FAIL, not pass."""
    from tiny_sd import read_set

    policy = _policy(tmp_path, pixart, attacks="{loss: {t: 10}}")  # latents scaled by 0.13: early t, where the nearest member is found
    members = torch.from_numpy(read_set(tmp_path / "sets" / "a.csv")[0])
    original = PixArtTarget._denoiser_output

    def memorised(self: PixArtTarget, x: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor], pad: object) -> torch.Tensor:
        original(self, x, timesteps, cond, pad)
        abar = self.alphas_cumprod[int(timesteps[0])]
        memory = torch.stack(self._encode_images(members))
        nearest = ((x[:, None] - abar.sqrt() * memory[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return (x - abar.sqrt() * memory[nearest]) / (1 - abar).sqrt()  # = e exactly on a member

    monkeypatch.setattr(PixArtTarget, "_denoiser_output", memorised)
    assert main(["audit", str(policy), "--json", str(tmp_path / "r.json")]) == 1, capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["attacks"]["loss"]["auc"] > 0.95


def test_init_and_the_cache_keys_know_the_family(pixart: Path) -> None:
    from naa_guard.init_policy import inspect_model

    summary = inspect_model(pixart)
    assert (summary.kind, summary.pipeline, summary.sample_size, summary.timesteps) == ("latent", "PixArtSigmaPipeline", 32, 1000)
    assert "PixArt" in summary.prediction_type
    material = read_model_info(pixart).identity_material()
    assert material["family"] == "pixart" and "T5 condition with attention mask, 300 tokens" in material["parametrization"]


def test_captions_the_pipeline_reads_as_empty_are_found(pixart: Path, target: PixArtTarget) -> None:
    from naa_guard.targets.emptytext import empty_text_probe

    texts = ["   ", "A", "a red disc", ""]
    assert empty_text_probe(None, read_model_info(pixart), False)(texts) == [True, False, False, True]  # strip() first, as encode_prompt
    assert empty_text_probe(target, None, False)(texts) == [True, False, False, True]


def test_references_of_another_family_or_schedule_are_refused(tmp_path: Path, pixart: Path) -> None:
    from tiny_sd import make_tiny_sd

    from naa_guard.targets.reference import check_reference

    make_tiny_sd(tmp_path / "sd")
    with pytest.raises(TargetError, match="pixart"):
        check_reference(read_model_info(pixart), read_model_info(tmp_path / "sd"))
    make_tiny_pixart(tmp_path / "steep", beta_end=0.03)
    with pytest.raises(TargetError, match="noise schedules differ"):
        check_reference(read_model_info(pixart), read_model_info(tmp_path / "steep"))
    check_reference(read_model_info(pixart), read_model_info(pixart))


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: shutil.rmtree(f / "transformer"), "missing transformer/"),
        (lambda f: shutil.rmtree(f / "tokenizer"), "missing tokenizer/"),
        (lambda f: _edit(f / "transformer" / "config.json", in_channels=8), "in_channels 8"),
        (lambda f: _edit(f / "transformer" / "config.json", out_channels=12), "out_channels 12"),
        (lambda f: _edit(f / "transformer" / "config.json", caption_channels=64), "caption_channels 64"),
        (lambda f: _edit(f / "transformer" / "config.json", cross_attention_dim=32), "cross_attention_dim 32"),
        (lambda f: _edit(f / "transformer" / "config.json", sample_size=7), "patch_size"),
        (lambda f: _edit(f / "transformer" / "config.json", _class_name="SanaTransformer2DModel"), "PixArtTransformer2DModel"),
        (lambda f: _edit(f / "transformer" / "config.json", use_additional_conditions=True), "use_additional_conditions"),
        (lambda f: _edit(f / "text_encoder" / "config.json", architectures=["CLIPTextModel"]), "T5EncoderModel"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", _class_name="FlowMatchEulerDiscreteScheduler"), "flow-matching PixArt"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", prediction_type="flow_prediction"), "flow_prediction"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", use_flow_sigmas=True), "use_flow_sigmas"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", beta_end=1.5), "beta_end"),
        (lambda f: _edit(f / "model_index.json", _class_name="SanaSprintPipeline"), "issue 26"),
    ],
)
def test_bad_pixart_folders_are_refused(tmp_path: Path, pixart: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = _copy(pixart, tmp_path)
    change(folder)
    with pytest.raises(TargetError, match=words):
        read_model_info(folder)


def test_a_lora_on_pixart_is_refused(tmp_path: Path, pixart: Path) -> None:
    (tmp_path / "lora.safetensors").write_bytes(b"")
    with pytest.raises(TargetError, match="model.lora"):
        read_model_info(pixart, lora=tmp_path / "lora.safetensors")


def test_pickle_transformer_weights_are_refused(tmp_path: Path, pixart: Path) -> None:
    folder = _copy(pixart, tmp_path)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(TargetError, match="pickle"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


@pytest.mark.parametrize("part", ["transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_weights_missing_a_tensor_are_refused(tmp_path: Path, pixart: Path, part: str) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(pixart, tmp_path)
    tensors = load_file(folder / part)
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, folder / part)
    with pytest.raises(TargetError, match="missing|do not match"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


def test_sharded_transformer_weights_load(tmp_path: Path, pixart: Path, target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    from diffusers import PixArtTransformer2DModel

    folder = _copy(pixart, tmp_path)
    shutil.rmtree(folder / "transformer")
    PixArtTransformer2DModel.from_pretrained(pixart / "transformer").save_pretrained(folder / "transformer", max_shard_size="20KB")
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    sharded = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    x0, cond = batch
    assert torch.equal(sharded.predict_noise(x0, 200, cond), target.predict_noise(x0, 200, cond))


def test_a_sharded_t5_encoder_loads_and_conditions_as_the_whole_file(tmp_path: Path, pixart: Path, target: PixArtTarget, batch) -> None:  # type: ignore[no-untyped-def]
    """T5-XXL ships as model-0000k-of-0000n.safetensors plus model.safetensors.index.json."""
    from transformers import T5EncoderModel

    folder = _copy(pixart, tmp_path)
    shutil.rmtree(folder / "text_encoder")
    T5EncoderModel.from_pretrained(pixart / "text_encoder").save_pretrained(folder / "text_encoder", max_shard_size="20KB")
    assert (folder / "text_encoder" / "model.safetensors.index.json").is_file() and not (folder / "text_encoder" / "model.safetensors").exists()
    sharded = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    _, cond = sharded.encode(torch.zeros(len(CAPTIONS), 3, 32, 32), CAPTIONS)
    assert torch.equal(cond["encoder_hidden_states"], batch[1]["encoder_hidden_states"])
    index = folder / "text_encoder" / "model.safetensors.index.json"
    shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[-1]
    (folder / "text_encoder" / shard).unlink()  # a shard the index names is missing: refused, never random weights
    with pytest.raises(TargetError):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
