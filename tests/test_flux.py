"""Flux (flow matching, SPEC section 3b): the pipeline's own conditioning, packing, ids, guidance and time input s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from test_flow import CAPTIONS, _edit, _policy, attack_scores, close
from tiny_flow import make_tiny_flux
from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.base import probe_target
from naa_guard.targets.flux import FluxTarget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flux") / "model"
    make_tiny_flux(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(flux: Path):  # type: ignore[no-untyped-def]
    from diffusers import FluxPipeline

    target = load_target(read_model_info(flux), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(target, "tiny flux")
    assert isinstance(target, FluxTarget)
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target, FluxPipeline.from_pretrained(flux), *target.encode(images, CAPTIONS)


def pipeline_velocity(pipeline, x_s: torch.Tensor, s: float, cond) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The transformer called as FluxPipeline.__call__ calls it: packed latents, ids, guidance 3.5, timestep = s."""
    n, c, h, w = x_s.shape
    packed = pipeline._pack_latents(x_s, n, c, h, w)
    ids = pipeline._prepare_latent_image_ids(n, h // 2, w // 2, "cpu", torch.float32)
    states = cond["encoder_hidden_states"]
    with torch.inference_mode():
        out = pipeline.transformer(
            hidden_states=packed, timestep=torch.full((n,), s), guidance=torch.full((n,), 3.5), pooled_projections=cond["pooled_projections"],
            encoder_hidden_states=states, txt_ids=torch.zeros(states.shape[1], 3), img_ids=ids, return_dict=False,
        )[0]  # fmt: skip
    return pipeline._unpack_latents(out, h * 4, w * 4, 4).float()  # _unpack_latents takes the pixel size and the VAE factor


def test_the_condition_is_the_pipelines_own_encode_prompt(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, x0, cond = loaded
    embeds, pooled, text_ids = pipeline.encode_prompt(CAPTIONS, CAPTIONS)
    close(cond["encoder_hidden_states"], embeds.detach())
    close(cond["pooled_projections"], pooled.detach())
    assert embeds.shape[1] == 512 and x0.shape == (len(CAPTIONS), 4, 8, 8)


def test_the_velocity_is_the_pipelines_call_at_time_input_s(loaded) -> None:  # type: ignore[no-untyped-def]
    target, pipeline, x0, cond = loaded
    s = 0.2
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "loss.noise", x0.device)
    x_s = (1 - s) * x0 + s * e
    v = pipeline_velocity(pipeline, x_s, s, cond)
    close(target.predict_velocity(x_s, 200, cond), v)
    assert not torch.allclose(pipeline_velocity(pipeline, x_s, 1000 * s, cond), v, atol=1e-3)  # an off-by-1000 time input differs
    close(attack_scores(target, "loss", {"t": 200}, x0, cond), -((v - (e - x0)).double() ** 2).flatten(1).sum(1))
    e_hat = x0 + 0.99 * pipeline_velocity(pipeline, x0, 0.01, cond)
    close(attack_scores(target, "sima", {"t": 10}, x0, cond), -(e_hat.double().abs() ** 4).flatten(1).sum(1))


def test_a_flux_folder_is_audited_end_to_end(tmp_path: Path, flux: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", str(_policy(tmp_path, flux, attacks="{loss: {}, sima: {t: 10}, pia: {}}")), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    assert "time input s" in (tmp_path / "r.json").read_text()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: shutil.rmtree(f / "text_encoder_2"), "missing text_encoder_2/"),
        (lambda f: _edit(f / "transformer" / "config.json", in_channels=4), "2x2-packed"),
        (lambda f: _edit(f / "transformer" / "config.json", joint_attention_dim=64), "d_model"),
        (lambda f: _edit(f / "vae" / "config.json", sample_size=36), "multiple of 8"),
    ],
)
def test_bad_flux_folders_are_refused(tmp_path: Path, flux: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "copy"
    shutil.copytree(flux, folder)
    change(folder)
    with pytest.raises(TargetError, match=words):
        read_model_info(folder)


def test_init_writes_a_policy_that_audits_a_flux_folder_with_its_captions(tmp_path: Path, flux: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_sd import write_set

    members, nonmembers = write_set(tmp_path, "a", 20, seed=1), write_set(tmp_path, "b", 20, seed=2)
    output = tmp_path / "p.naa.yaml"
    assert main(["init", str(flux), str(members), str(nonmembers), "-o", str(output)]) == 0, capsys.readouterr().err
    text = output.read_text()
    assert "caption" in text
    code = main(["audit", str(output), "--quiet", "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    assert json.loads((tmp_path / "r.json").read_text())["conditioning"] != "empty"
