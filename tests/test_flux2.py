"""Flux 2 [klein] (flow matching, SPEC section 3b): the pipeline's own condition, latent space, ids and time input s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from test_flow import CAPTIONS, _edit, _policy, attack_scores, close
from tiny_flux2 import make_tiny_flux2_klein
from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.base import probe_target
from naa_guard.targets.flux2 import Flux2KleinTarget, patchify

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def klein(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("klein") / "model"
    make_tiny_flux2_klein(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(klein: Path):  # type: ignore[no-untyped-def]
    from diffusers import Flux2KleinPipeline

    target = load_target(read_model_info(klein), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(target, "tiny flux 2 klein")
    assert isinstance(target, Flux2KleinTarget)
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target, Flux2KleinPipeline.from_pretrained(klein), images, *target.encode(images, CAPTIONS)


def pipeline_velocity(pipeline, x_s: torch.Tensor, s: float, cond) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The transformer called as Flux2KleinPipeline.__call__ calls it: packed tokens, 4-D ids, timestep / 1000, guidance None."""
    n, _, h, w = x_s.shape
    ids = pipeline._prepare_latent_ids(x_s)
    states = cond["encoder_hidden_states"]
    timestep = torch.full((n,), 1000.0 * s)  # the scheduler's timestep: sigma * 1000
    with torch.inference_mode():
        out = pipeline.transformer(
            hidden_states=pipeline._pack_latents(x_s), timestep=timestep / 1000, guidance=None, encoder_hidden_states=states,
            txt_ids=pipeline._prepare_text_ids(states), img_ids=ids, return_dict=False,
        )[0][:, : h * w]  # fmt: skip
    return pipeline._unpack_latents_with_ids(out, ids, h, w).float()


def test_the_condition_is_the_pipelines_own_encode_prompt(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, _, x0, cond = loaded
    embeds, ids = pipeline.encode_prompt(CAPTIONS)
    assert cond["encoder_hidden_states"].shape == embeds.shape == (len(CAPTIONS), 512, 48) and ids.shape[-1] == 4
    close(cond["encoder_hidden_states"], embeds.detach())


def test_z0_is_the_pipelines_own_image_latent(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, images, x0, _ = loaded
    with torch.inference_mode():
        want = pipeline._encode_vae_image(images, None)  # mode, 2x2 patchify, batch-norm normalisation
        raw = patchify(pipeline.vae.encode(images).latent_dist.mode())
    assert x0.shape == want.shape == (len(CAPTIONS), 16, 4, 4)
    close(x0, want.float())
    assert not torch.allclose(x0, raw, atol=1e-2)  # the normalisation is applied, not skipped


def test_the_time_input_is_s_and_the_estimate_is_x_s_plus_1_minus_s_v(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, _, x0, cond = loaded
    s = 0.3
    x_s = (1 - s) * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    v = pipeline_velocity(pipeline, x_s, s, cond)
    close(target.predict_velocity(x_s, 300, cond), v)
    close(target.predict_noise_clean(x_s, 300, cond), x_s + (1 - s) * v)
    # an off-by-1000 time input gives another velocity: the convention is pinned, not incidental
    assert not torch.allclose(pipeline_velocity(pipeline, x_s, 1000 * s, cond), v, atol=1e-3)
    assert not torch.allclose(pipeline_velocity(pipeline, x_s, s / 1000, cond), v, atol=1e-3)


def test_loss_and_sima_are_their_formulas_on_the_pipelines_velocity(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, _, x0, cond = loaded
    s = 0.2
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "loss.noise", x0.device)
    v = pipeline_velocity(pipeline, (1 - s) * x0 + s * e, s, cond)
    close(attack_scores(target, "loss", {"t": 200}, x0, cond), -((v - (e - x0)).double() ** 2).flatten(1).sum(1))
    e_hat = x0 + 0.99 * pipeline_velocity(pipeline, x0, 0.01, cond)
    close(attack_scores(target, "sima", {"t": 10}, x0, cond), -(e_hat.double().abs() ** 4).flatten(1).sum(1))


def test_a_klein_folder_is_audited_end_to_end_with_its_captions_and_a_reference(tmp_path: Path, klein: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tiny_flux2_klein(tmp_path / "base", seed=5)
    policy = _policy(tmp_path, klein, attacks="{loss: {}, sima: {t: 10}, pia: {}}", extra=f", reference: {tmp_path / 'base'}")
    code = main(["audit", str(policy), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert "bn.running_mean" in json.dumps(report["fingerprint"]) and report["conditioning"].startswith("caption")
    assert {"loss", "loss/ref", "sima", "sima/ref", "pia"} <= set(report["attacks"])


def test_scores_do_not_depend_on_the_batch(loaded) -> None:  # type: ignore[no-untyped-def]
    from test_flow import build_attack
    from tolerance import assert_scores_close

    target, _, _, x0, cond = loaded
    whole = attack_scores(target, "loss", {}, x0, cond)
    for row in range(x0.shape[0]):
        one = build_attack("loss", {}).score(target, x0[row : row + 1], sample_keys("members", [row]), 7, {k: v[row : row + 1] for k, v in cond.items()})
        assert_scores_close(one.numpy(), whole[row : row + 1].numpy())
    alone = target.encode_captions([CAPTIONS[1]])[0]["encoder_hidden_states"][0]
    close(alone, cond["encoder_hidden_states"][1])  # a caption's condition does not depend on the captions encoded with it


def test_init_writes_a_policy_for_a_klein_folder(tmp_path: Path, klein: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_sd import write_set

    members, nonmembers = write_set(tmp_path, "a", 20, seed=1), write_set(tmp_path, "b", 20, seed=2)
    assert main(["init", str(klein), str(members), str(nonmembers), "-o", str(tmp_path / "p.naa.yaml")]) == 0, capsys.readouterr().err
    assert "caption" in (tmp_path / "p.naa.yaml").read_text()


def test_the_cache_identity_names_the_flux2_family_and_a_flux_reference_is_refused(klein: Path, tmp_path: Path) -> None:
    from tiny_flow import make_tiny_flux
    from naa_guard.targets.reference import check_reference

    make_tiny_flux(tmp_path / "flux")
    mine, flux = read_model_info(klein).identity_material(), read_model_info(tmp_path / "flux").identity_material()
    assert mine["family"] == "flux2" and "bn.running_var" in mine["parametrization"] and mine != flux
    with pytest.raises(TargetError, match="flux model"):
        check_reference(read_model_info(klein), read_model_info(tmp_path / "flux"))


def _drop_running_var(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors.pop("bn.running_var")
    save_file(tensors, weights)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: shutil.rmtree(f / "text_encoder"), "missing text_encoder/"),
        (lambda f: _edit(f / "model_index.json", _class_name="Flux2Pipeline"), "Mistral3"),
        (lambda f: _edit(f / "model_index.json", vae=["diffusers", "AutoencoderKL"]), "AutoencoderKLFlux2"),
        (lambda f: _edit(f / "vae" / "config.json", _class_name="AutoencoderKL"), "batch norm"),
        (lambda f: _edit(f / "vae" / "config.json", patch_size=[1, 1]), "patch_size"),
        (lambda f: _edit(f / "vae" / "config.json", patch_size=2), "patch_size"),
        (lambda f: _edit(f / "vae" / "config.json", latent_channels="4"), "latent_channels"),
        (lambda f: _edit(f / "transformer" / "config.json", axes_dims_rope=[4, 4, 4, "4"]), "4-D position ids"),
        (lambda f: _edit(f / "text_encoder" / "config.json", architectures=["MistralForCausalLM"]), "Qwen3ForCausalLM"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", _class_name="DDPMScheduler"), "flow matching"),
        (lambda f: _edit(f / "transformer" / "config.json", in_channels=4), "2x2-patchified"),
        (lambda f: _edit(f / "transformer" / "config.json", joint_attention_dim=16), "hidden states 9, 18 and 27"),
        (lambda f: _edit(f / "text_encoder" / "config.json", num_hidden_layers=26), "at least 27 layers"),
        (lambda f: _edit(f / "transformer" / "config.json", axes_dims_rope=[4, 4, 8]), "4-D position ids"),
        (lambda f: (f / "tokenizer" / "chat_template.jinja").unlink(), "chat template"),
        (lambda f: _edit(f / "vae" / "config.json", sample_size=36), "multiple of 8"),
    ],
)
def test_bad_klein_folders_are_refused(tmp_path: Path, klein: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "copy"
    shutil.copytree(klein, folder)
    change(folder)
    with pytest.raises(TargetError, match=words):
        read_model_info(folder)


def test_a_vae_without_its_batch_norm_statistics_is_refused(tmp_path: Path, klein: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(klein, folder)
    _drop_running_var(folder)  # loaded as is, the statistics would stay 1: another latent space, silently
    with pytest.raises(TargetError, match="bn.running_var"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


def test_a_flux2_lora_is_refused_until_it_is_audited(tmp_path: Path, klein: Path) -> None:
    (tmp_path / "l.safetensors").write_bytes(b"")
    with pytest.raises(TargetError, match="model.lora on a Flux 2 pipeline"):
        read_model_info(klein, lora=tmp_path / "l.safetensors")


def test_a_klein_model_that_memorised_its_members_fails_the_gate(tmp_path: Path, klein: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A velocity that denoises toward the nearest member's latent (in the pipeline's normalised space) must FAIL, not pass."""
    from tiny_sd import read_set

    policy = _policy(tmp_path, klein, attacks="{loss: {}}")
    members = torch.from_numpy(read_set(tmp_path / "sets" / "a.csv")[0])
    original = Flux2KleinTarget.predict_velocity

    def memorised(self: Flux2KleinTarget, x_s: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        out = original(self, x_s, t, cond)
        s = self.flow_time(t)
        memory = torch.stack(self._encode_images(members))
        nearest = ((x_s[:, None] - (1 - s) * memory[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return out if s == 0.0 else (x_s - memory[nearest]) / s  # = e - z0 exactly on a member

    monkeypatch.setattr(Flux2KleinTarget, "predict_velocity", memorised)
    assert main(["audit", str(policy), "--json", str(tmp_path / "r.json")]) == 1, capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["attacks"]["loss"]["auc"] > 0.95


def test_a_sharded_text_encoder_loads_and_conditions_the_same(tmp_path: Path, klein: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    from transformers import Qwen3ForCausalLM

    target, _, _, _, cond = loaded
    folder = tmp_path / "copy"
    shutil.copytree(klein, folder)
    shutil.rmtree(folder / "text_encoder")
    Qwen3ForCausalLM.from_pretrained(klein / "text_encoder").save_pretrained(folder / "text_encoder", max_shard_size="20KB")
    assert (folder / "text_encoder" / "model.safetensors.index.json").is_file()  # as the real klein encoders are stored
    sharded = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    table, rows = sharded.encode_captions(CAPTIONS)
    close(table["encoder_hidden_states"][rows], cond["encoder_hidden_states"])


def test_the_empty_caption_probe_reads_the_chat_templated_tokens(klein: Path, loaded) -> None:  # type: ignore[no-untyped-def]
    from naa_guard.targets.emptytext import empty_text_probe

    target = loaded[0]
    for probe in (empty_text_probe(None, read_model_info(klein), False), empty_text_probe(target, read_model_info(klein), False)):
        assert probe is not None and probe(["", "a red disc"]) == [True, False]
