"""model.max_sequence_length and model.guidance (SD3 / Flux): the transformer gets what the pipeline would give it, the
cache keys follow the values, and a value that does not apply is a policy error before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_flow import CAPTIONS, _policy, close
from tiny_flow import make_tiny_flux, make_tiny_sd3
from naa_guard.cli import main
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy
from naa_guard.scoring.models import model_source

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sd3_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3t5") / "model"
    make_tiny_sd3(folder, t5=True)
    return folder


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flux") / "model"
    make_tiny_flux(folder)
    return folder


def _target(tmp_path: Path, model: Path, extra: str):  # type: ignore[no-untyped-def]
    """Return the target a policy with these model keys loads (through the audit's own model source)."""
    from naa_guard.targets import load_target

    source = model_source(load_policy(_policy(tmp_path, model, extra=extra)))  # the whole pipeline: the audit's scorer loads it in two parts
    return load_target(source.info, allow_pickle=False, device="cpu", dtype="float32"), source.info


def test_sd3_t5_tokens_are_the_pipelines_max_sequence_length(tmp_path: Path, sd3_t5: Path) -> None:
    from diffusers import StableDiffusion3Pipeline

    target, info = _target(tmp_path, sd3_t5, ", max_sequence_length: 77")
    pipeline = StableDiffusion3Pipeline.from_pretrained(sd3_t5)
    embeds, _, pooled, _ = pipeline.encode_prompt(CAPTIONS, CAPTIONS, CAPTIONS, do_classifier_free_guidance=False, max_sequence_length=77)
    _, cond = target.encode(torch.zeros(len(CAPTIONS), 3, 32, 32), CAPTIONS)
    assert cond["encoder_hidden_states"].shape == embeds.shape == (len(CAPTIONS), 24 + 77, 80)
    close(cond["encoder_hidden_states"], embeds.detach())
    close(cond["pooled_projections"], pooled.detach())
    assert "T5 tokens 77" in info.identity_material()["parametrization"]


def test_sd3_without_t5_feeds_max_sequence_length_zero_tokens(tmp_path: Path) -> None:
    """diffusers feeds max_sequence_length zero tokens in place of a missing T5: the key changes the input there too."""
    from diffusers import StableDiffusion3Pipeline

    make_tiny_sd3(tmp_path / "sd3")
    target, info = _target(tmp_path, tmp_path / "sd3", ", max_sequence_length: 77")
    pipeline = StableDiffusion3Pipeline.from_pretrained(tmp_path / "sd3", text_encoder_3=None, tokenizer_3=None)
    embeds, _, pooled, _ = pipeline.encode_prompt(CAPTIONS, CAPTIONS, CAPTIONS, do_classifier_free_guidance=False, max_sequence_length=77)
    x0, cond = target.encode(torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, CAPTIONS)
    seen = {}
    original = target.transformer.forward

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return original(*args, **kwargs)

    target.transformer.forward = spy
    target.predict_velocity(x0, 200, cond)
    states = seen["encoder_hidden_states"][: len(CAPTIONS)]
    assert states.shape == embeds.shape == (len(CAPTIONS), 24 + 77, 80)
    assert torch.equal(states, embeds.detach()) and torch.equal(seen["pooled_projections"][: len(CAPTIONS)], pooled.detach())
    assert "no T5: 77 zero tokens" in info.identity_material()["parametrization"]


def test_flux_t5_tokens_and_guidance_reach_the_transformer(tmp_path: Path, flux: Path) -> None:
    from diffusers import FluxPipeline

    target, info = _target(tmp_path, flux, ", max_sequence_length: 256, guidance: 1.5")
    pipeline = FluxPipeline.from_pretrained(flux)
    embeds, pooled, _ = pipeline.encode_prompt(CAPTIONS, CAPTIONS, max_sequence_length=256)
    x0, cond = target.encode(torch.zeros(len(CAPTIONS), 3, 32, 32), CAPTIONS)
    assert cond["encoder_hidden_states"].shape == embeds.shape == (len(CAPTIONS), 256, 80)
    close(cond["encoder_hidden_states"], embeds.detach())
    close(cond["pooled_projections"], pooled.detach())
    seen = {}
    original = target.transformer.forward

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return original(*args, **kwargs)

    target.transformer.forward = spy
    target.predict_velocity(x0, 200, cond)
    assert seen["guidance"].dtype == torch.float32 and torch.equal(seen["guidance"], torch.full_like(seen["guidance"], 1.5))  # FluxPipeline: torch.full([1], guidance_scale)
    assert "T5 tokens 256, guidance 1.5" in info.identity_material()["parametrization"]


def test_the_defaults_are_the_pipelines(tmp_path: Path, flux: Path) -> None:
    target, info = _target(tmp_path, flux, "")
    assert (target.t5_tokens, target.guidance, info.t5_tokens, info.guidance_input) == (512, 3.5, 512, 3.5)


def test_another_length_never_reuses_stored_encodings_or_scores(tmp_path: Path, sd3_t5: Path) -> None:
    from naa_guard.audit import audit
    from naa_guard.scoring.chunks import ChunkStore

    store = tmp_path / "chunks"
    first = audit(load_policy(_policy(tmp_path, sd3_t5, attacks="{loss: {}}")), progress=False, chunk_store=ChunkStore(store))
    again = audit(load_policy(_policy(tmp_path, sd3_t5, attacks="{loss: {}}")), progress=False, chunk_store=ChunkStore(store))
    assert np.array_equal(first.attacks["loss"].member_scores, again.attacks["loss"].member_scores)
    other = audit(load_policy(_policy(tmp_path, sd3_t5, attacks="{loss: {}}", extra=", max_sequence_length: 77")), progress=False, chunk_store=ChunkStore(store))
    assert not np.allclose(first.attacks["loss"].member_scores, other.attacks["loss"].member_scores)  # a stale score would be equal


@pytest.mark.parametrize(
    ("bad", "good", "words"),
    [
        (", max_sequence_length: 0", ", max_sequence_length: 1", "model.max_sequence_length"),
        (", max_sequence_length: 513", ", max_sequence_length: 512", "model.max_sequence_length"),
        (", max_sequence_length: '77'", ", max_sequence_length: 77", "model.max_sequence_length"),
        (", max_sequence_length: true", ", max_sequence_length: 77", "model.max_sequence_length"),
        (", guidance: 0", ", guidance: 0.5", "model.guidance"),
        (", guidance: .nan", ", guidance: 3.5", "model.guidance"),
        (", guidance: '3.5'", ", guidance: 3", "model.guidance"),
        (", loader: 'a.b:c', guidance: 3.5", ", loader: 'a.b:c'", "guidance apply to SD3 / Flux"),
    ],
)
def test_bad_values_are_policy_errors_naming_the_file_and_key(tmp_path: Path, bad: str, good: str, words: str) -> None:
    load_policy(_policy(tmp_path, tmp_path, extra=good))  # the key and its valid values are known
    with pytest.raises(PolicyError, match=words) as caught:
        load_policy(_policy(tmp_path, tmp_path, extra=bad))
    assert "f.naa.yaml" in str(caught.value)


def _refused(tmp_path: Path, model: Path, extra: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["audit", str(_policy(tmp_path, model, extra=extra)), "--quiet"]) == 2
    return capsys.readouterr().err


def test_guidance_on_a_model_without_a_guidance_input_is_refused_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tiny_flux(tmp_path / "schnell", guidance=False)
    err = _refused(tmp_path, tmp_path / "schnell", ", guidance: 3.5", capsys)
    assert "model.guidance" in err and "guidance_embeds" in err and "f.naa.yaml" in err
    make_tiny_sd3(tmp_path / "sd3")
    err = _refused(tmp_path, tmp_path / "sd3", ", guidance: 3.5", capsys)
    assert "model.guidance" in err and "guidance_embeds" in err


def test_the_keys_on_a_model_without_them_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_sd import make_tiny_sd

    make_tiny_sd(tmp_path / "sd")
    err = _refused(tmp_path, tmp_path / "sd", ", max_sequence_length: 77", capsys)
    assert "model.max_sequence_length" in err and "not an SD3 / Flux pipeline" in err


def test_the_schema_lists_both_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    model = json.loads(capsys.readouterr().out)["$defs"]["ModelSection"]["properties"]
    assert "256" in model["max_sequence_length"]["description"] and "3.5" in model["guidance"]["description"]
