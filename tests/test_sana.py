"""Sana (SanaPipeline: Gemma2, AutoencoderDC, flow matching): the target, its call as the pipeline's, attacks, refusals."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch

from tiny_sana import make_tiny_sana
from test_flow import _policy as flow_policy
from tolerance import assert_scores_close
from naa_guard.attacks import get_attack
from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.base import padding_rows, probe_target
from naa_guard.targets.sana import COMPLEX_HUMAN_INSTRUCTION, SanaTarget

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["A Red disc at the LEFT on white  ", "a blue bar at the top on black", "", "a green square at the centre on teal"]


@pytest.fixture(scope="module")
def sana(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sana") / "model"
    make_tiny_sana(folder)
    return folder


@pytest.fixture(scope="module")
def target(sana: Path) -> SanaTarget:
    loaded = load_target(read_model_info(sana), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(loaded, "tiny sana")
    assert isinstance(loaded, SanaTarget)
    return loaded


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def batch(target: SanaTarget, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return target.encode(images, CAPTIONS)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert_scores_close(got.numpy(), want.numpy(), relative=1e-4)


def test_the_condition_and_latents_are_the_pipelines_own(sana: Path, batch, images: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    from diffusers import SanaPipeline

    pipeline = SanaPipeline.from_pretrained(sana)
    instruction = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    assert "\n".join(instruction) == COMPLEX_HUMAN_INSTRUCTION  # the pipeline's own default, as it samples
    texts = CAPTIONS + [""] * padding_rows(len(CAPTIONS))  # the same padded batch, so the Gemma call has the same shape
    with torch.no_grad():  # as __call__ runs it
        embeds, mask, _, _ = pipeline.encode_prompt(texts, do_classifier_free_guidance=False, complex_human_instruction=instruction)
        latents = torch.cat([pipeline.vae.encode(image[None]).latent for image in images]) * pipeline.vae.config.scaling_factor
    x0, cond = batch
    assert cond["encoder_hidden_states"].shape == (len(CAPTIONS), 300, 24)
    assert torch.equal(cond["encoder_hidden_states"], embeds[: len(CAPTIONS)]) and torch.equal(cond["encoder_attention_mask"], mask[: len(CAPTIONS)].float())
    assert torch.equal(x0, latents)  # the DC autoencoder's deterministic latent x scaling_factor, no shift
    assert pipeline.vae.config.scaling_factor == pytest.approx(0.41407)


def velocity(target: SanaTarget, x_s: torch.Tensor, time_input: float, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """The transformer called by hand as SanaPipeline calls it: the scheduler's timestep x timestep_scale, states and mask."""
    with torch.inference_mode():
        return target.transformer(
            x_s, encoder_hidden_states=cond["encoder_hidden_states"], encoder_attention_mask=cond["encoder_attention_mask"],
            timestep=torch.full((x_s.shape[0],), time_input), return_dict=False,
        )[0].float()  # fmt: skip


def test_the_time_input_is_1000_s_and_the_estimate_is_x_s_plus_1_minus_s_v(target: SanaTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    s = 0.3
    x_s = (1 - s) * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    close(target.predict_noise_clean(x_s, 300, cond), x_s + (1 - s) * velocity(target, x_s, 1000 * s, cond))
    # an off-by-1000 time input gives another velocity: the convention is pinned, not incidental
    assert not torch.allclose(velocity(target, x_s, 1000 * s, cond), velocity(target, x_s, s, cond), atol=1e-3)


def test_the_schedulers_flow_prediction_is_the_velocity_e_minus_z0(sana: Path) -> None:
    """SanaPipeline's scheduler reads the output as v = e - z0 (z0 = x_s - s v): the sign naa-guard converts with."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler.from_pretrained(sana / "scheduler")
    scheduler.set_timesteps(10)
    scheduler._step_index = 4
    sigma = float(scheduler.sigmas[4])
    generator = torch.Generator().manual_seed(2)
    z0, e = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 4, 8, 8, generator=generator)
    x_s = (1 - sigma) * z0 + sigma * e
    close(scheduler.convert_model_output(e - z0, sample=x_s), z0)
    assert int(scheduler.timesteps[4]) == int(1000 * sigma)  # the time input the pipeline feeds: 1000 s


def build_attack(name: str, params: dict):  # type: ignore[no-untyped-def,type-arg]
    cls = get_attack(name)
    return cls(cls.Params(**params))


def attack_scores(target: SanaTarget, name: str, params: dict, x0: torch.Tensor, cond) -> torch.Tensor:  # type: ignore[no-untyped-def,type-arg]
    return build_attack(name, params).score(target, x0, sample_keys("members", list(range(x0.shape[0]))), 7, cond)


def test_loss_is_the_flow_matching_loss(target: SanaTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "loss.noise", x0.device)
    s = 0.2
    v = velocity(target, (1 - s) * x0 + s * e, 1000 * s, cond)
    close(attack_scores(target, "loss", {"t": 200}, x0, cond), -((v - (e - x0)).double() ** 2).flatten(1).sum(1))


def test_sima_feeds_the_clean_latent(target: SanaTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    s = 0.05
    e_hat = x0 + (1 - s) * velocity(target, x0, 1000 * s, cond)
    close(attack_scores(target, "sima", {"t": 50}, x0, cond), -(e_hat.double().abs() ** 4).flatten(1).sum(1))


def test_pia_uses_the_deterministic_noise(target: SanaTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e0 = x0 + velocity(target, x0, 0.0, cond)
    s = 0.3
    x_s = (1 - s) * x0 + s * e0
    e_hat = x_s + (1 - s) * velocity(target, x_s, 1000 * s, cond)
    close(attack_scores(target, "pia", {"t": 300}, x0, cond), -((e0 - e_hat).double().abs() ** 4).flatten(1).sum(1))


@pytest.mark.parametrize("name", ["naa", "secmi"])
def test_the_ode_attacks_run_and_do_not_depend_on_the_batch(target: SanaTarget, batch, name: str) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    whole = attack_scores(target, name, {}, x0, cond)
    halves = torch.cat([build_attack(name, {}).score(target, x0[i : i + 2], sample_keys("members", [i, i + 1]), 7, {k: v[i : i + 2] for k, v in cond.items()}) for i in (0, 2)])
    assert torch.isfinite(whole).all()
    close(halves, whole)


def _policy(tmp_path: Path, model: Path, attacks: str = "{loss: {}, sima: {}, pia: {}, naa: {}, secmi: {}}", extra: str = "", count: int = 20) -> Path:
    """Return the SD3 tests' policy (test_flow._policy) for this model, with every attack by default."""
    return flow_policy(tmp_path, model, attacks, extra, count)


def test_a_sana_folder_is_audited_end_to_end_with_its_captions_and_a_reference(tmp_path: Path, sana: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "base"
    make_tiny_sana(reference, seed=5, scheduler="euler")  # a FlowMatchEuler-saved base: the same flow parametrization
    code = main(["audit", str(_policy(tmp_path, sana, extra=f", reference: {reference}")), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    text = json.dumps(json.loads((tmp_path / "r.json").read_text()))
    assert "flow matching" in text and "sana: time input 1000 s" in text and "/ref" in text


def test_a_sana_model_that_memorised_its_members_fails_the_gate(tmp_path: Path, sana: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A velocity that denoises toward the nearest member (a perfectly memorising model) must FAIL, not pass."""
    from tiny_sd import read_set

    policy = _policy(tmp_path, sana, attacks="{loss: {}}")
    members = torch.from_numpy(read_set(tmp_path / "sets" / "a.csv")[0])
    original = SanaTarget.predict_velocity

    def memorised(self: SanaTarget, x_s: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        out = original(self, x_s, t, cond)
        s = self.flow_time(t)
        if s == 0.0:
            return out
        memory = torch.stack(self._encode_images(members))
        nearest = ((x_s[:, None] - (1 - s) * memory[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return (x_s - memory[nearest]) / s  # = e - z0 exactly on a member

    monkeypatch.setattr(SanaTarget, "predict_velocity", memorised)
    assert main(["audit", str(policy), "--json", str(tmp_path / "r.json")]) == 1, capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["attacks"]["loss"]["auc"] > 0.95


def test_init_the_cache_keys_and_the_empty_caption_check_know_sana(sana: Path, target: SanaTarget) -> None:
    from naa_guard.init_policy import inspect_model
    from naa_guard.targets.emptytext import empty_text_probe

    summary = inspect_model(sana)
    assert (summary.pipeline, summary.sample_size, summary.prediction_type) == ("SanaPipeline", 32, "flow matching (velocity)")
    assert read_model_info(sana).identity_material()["family"] == "sana"
    assert "sample_size 8" in read_model_info(sana).size_source() and "compression 4" in read_model_info(sana).size_source()
    texts = ["   ", "A", ""]
    assert empty_text_probe(None, read_model_info(sana), False)(texts) == [True, False, True]
    assert empty_text_probe(target, None, False)(texts) == [True, False, True]


def test_a_reference_of_another_flow_family_is_refused(tmp_path: Path, sana: Path) -> None:
    from tiny_flow import make_tiny_sd3

    from naa_guard.targets.reference import check_reference

    make_tiny_sd3(tmp_path / "sd3")
    with pytest.raises(TargetError, match="sana"):
        check_reference(read_model_info(sana), read_model_info(tmp_path / "sd3"))


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
        (lambda f: shutil.rmtree(f / "vae"), "missing vae/"),
        (lambda f: _edit(f / "transformer" / "config.json", in_channels=8), "in_channels 8"),
        (lambda f: _edit(f / "transformer" / "config.json", caption_channels=32), "caption_channels 32"),
        (lambda f: _edit(f / "transformer" / "config.json", cross_attention_dim=16), "cross_attention_dim 16"),
        (lambda f: _edit(f / "transformer" / "config.json", guidance_embeds=True), "SanaSprintPipeline"),
        (lambda f: _edit(f / "transformer" / "config.json", _class_name="PixArtTransformer2DModel"), "SanaTransformer2DModel"),
        (lambda f: _edit(f / "vae" / "config.json", _class_name="AutoencoderKL"), "AutoencoderDC"),
        (lambda f: _edit(f / "vae" / "config.json", scaling_factor=None), "scaling_factor"),
        (lambda f: _edit(f / "text_encoder" / "config.json", architectures=["T5EncoderModel"]), "Gemma2Model"),
        (lambda f: _edit(f / "tokenizer" / "tokenizer_config.json", tokenizer_class="T5Tokenizer"), "GemmaTokenizer"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", prediction_type="epsilon"), "flow_prediction"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", use_flow_sigmas=False), "use_flow_sigmas"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", num_train_timesteps=500), "num_train_timesteps"),
        (lambda f: _edit(f / "model_index.json", _class_name="SanaSprintPipeline"), "issue 26"),
    ],
)
def test_bad_sana_folders_are_refused(tmp_path: Path, sana: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = _copy(sana, tmp_path)
    change(folder)
    with pytest.raises(TargetError, match=words):
        read_model_info(folder)


@pytest.mark.parametrize("part", ["transformer", "vae"])
def test_pickle_weights_are_refused(tmp_path: Path, sana: Path, part: str) -> None:
    folder = _copy(sana, tmp_path)
    weights = folder / part / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(TargetError, match="pickle"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


@pytest.mark.parametrize("part", ["transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_weights_missing_a_tensor_are_refused(tmp_path: Path, sana: Path, part: str) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(sana, tmp_path)
    tensors = load_file(folder / part)
    tensors.pop(sorted(tensors)[-1])
    save_file(tensors, folder / part)
    with pytest.raises(TargetError, match="missing|do not match"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
