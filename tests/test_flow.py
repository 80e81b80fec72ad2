"""SD3 (flow matching, SPEC section 3b): the target, the one conversion every attack goes through, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_policy
from tiny_flow import make_tiny_sd3
from tiny_sd import write_set
from tolerance import assert_scores_close
from naa_guard.attacks import get_attack
from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.base import probe_target
from naa_guard.targets.flow import FlowTarget

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["a red disc at the left on white", "a blue bar at the top on black", "", "a green square at the centre on teal"]


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3") / "model"
    make_tiny_sd3(folder)
    return folder


@pytest.fixture(scope="module")
def target(sd3: Path) -> FlowTarget:
    loaded = load_target(read_model_info(sd3), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(loaded, "tiny sd3")
    assert isinstance(loaded, FlowTarget)
    return loaded


@pytest.fixture(scope="module")
def batch(target: FlowTarget) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target.encode(images, CAPTIONS)


def test_a_t5_pipeline_conditions_as_the_pipelines_own_encode_prompt(tmp_path: Path) -> None:
    from diffusers import StableDiffusion3Pipeline

    make_tiny_sd3(tmp_path / "t5", t5=True)
    loaded = load_target(read_model_info(tmp_path / "t5"), allow_pickle=False, device="cpu", dtype="float32")
    pipeline = StableDiffusion3Pipeline.from_pretrained(tmp_path / "t5")
    assert pipeline.text_encoder_3 is not None
    embeds, _, pooled, _ = pipeline.encode_prompt(CAPTIONS, CAPTIONS, CAPTIONS, do_classifier_free_guidance=False)
    x0, cond = loaded.encode(torch.zeros(len(CAPTIONS), 3, 32, 32), CAPTIONS)
    assert cond["encoder_hidden_states"].shape == embeds.shape == (len(CAPTIONS), 24 + 256, 80)
    close(cond["encoder_hidden_states"], embeds.detach())  # our padded batch of 16 v the pipeline's 4: float32 reordering only
    close(cond["pooled_projections"], pooled.detach())
    assert loaded.predict_noise(x0, 200, cond).shape == x0.shape


def velocity(target: FlowTarget, x_s: torch.Tensor, s: float, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    """The transformer called by hand as StableDiffusion3Pipeline calls it: time input 1000 s, no T5 = 256 zero tokens."""
    states = torch.cat([cond["encoder_hidden_states"], torch.zeros(x_s.shape[0], 256, 80)], dim=1)
    timestep = torch.full((x_s.shape[0],), 1000.0 * s)
    with torch.inference_mode():
        return target.transformer(hidden_states=x_s, timestep=timestep, encoder_hidden_states=states, pooled_projections=cond["pooled_projections"]).sample.float()


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert_scores_close(got.numpy(), want.numpy(), relative=1e-4)


def test_the_condition_is_the_pipelines_own_encode_prompt(sd3: Path, target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    from diffusers import StableDiffusion3Pipeline

    pipeline = StableDiffusion3Pipeline.from_pretrained(sd3, text_encoder_3=None, tokenizer_3=None)
    embeds, _, pooled, _ = pipeline.encode_prompt(CAPTIONS, CAPTIONS, CAPTIONS, do_classifier_free_guidance=False)
    x0, cond = batch
    ours = torch.cat([cond["encoder_hidden_states"], torch.zeros(len(CAPTIONS), 256, 80)], dim=1)
    assert torch.equal(ours, embeds.detach()) and torch.equal(cond["pooled_projections"], pooled.detach())
    vae = pipeline.vae
    assert x0.shape == (len(CAPTIONS), 4, 8, 8) and vae.config.shift_factor == 0.1 and vae.config.scaling_factor == 1.5


def test_the_time_input_is_1000_s_and_the_estimate_is_x_s_plus_1_minus_s_v(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    s = 0.3
    x_s = (1 - s) * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    close(target.predict_noise_clean(x_s, 300, cond), x_s + (1 - s) * velocity(target, x_s, s, cond))
    # an off-by-1000 time input gives another velocity: the convention is pinned, not incidental
    assert not torch.allclose(velocity(target, x_s, s, cond), velocity(target, x_s, s / 1000, cond), atol=1e-3)
    assert float(target.alphas_cumprod[0]) == 1.0 and len(target.alphas_cumprod) == 1000


def build_attack(name: str, params: dict):  # type: ignore[no-untyped-def,type-arg]
    cls = get_attack(name)
    return cls(cls.Params(**params))


def attack_scores(target: FlowTarget, name: str, params: dict, x0: torch.Tensor, cond) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return build_attack(name, params).score(target, x0, sample_keys("members", list(range(x0.shape[0]))), 7, cond)


def test_loss_is_the_flow_matching_loss(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "loss.noise", x0.device)
    s = 0.2
    v = velocity(target, (1 - s) * x0 + s * e, s, cond)
    want = -((v - (e - x0)).double() ** 2).flatten(1).sum(1)
    close(attack_scores(target, "loss", {"t": 200}, x0, cond), want)


def test_sima_feeds_the_clean_latent(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    s = 0.05
    e_hat = x0 + (1 - s) * velocity(target, x0, s, cond)
    close(attack_scores(target, "sima", {"t": 50}, x0, cond), -(e_hat.double().abs() ** 4).flatten(1).sum(1))


def test_pia_uses_the_deterministic_noise(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    e0 = x0 + velocity(target, x0, 0.0, cond)
    s = 0.3
    x_s = (1 - s) * x0 + s * e0
    e_hat = x_s + (1 - s) * velocity(target, x_s, s, cond)
    close(attack_scores(target, "pia", {"t": 300}, x0, cond), -((e0 - e_hat).double().abs() ** 4).flatten(1).sum(1))


def test_naa_follows_the_euler_path_of_the_flow_ode(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    from naa_guard.attacks.naa import aggregate

    x0, cond = batch
    e = seeded_noise(sample_keys("members", list(range(x0.shape[0]))), tuple(x0.shape[1:]), 7, "naa.inject", x0.device)
    times = [0.08, 0.07, 0.06]
    x = (1 - times[0]) * x0 + times[0] * e
    predictions = []
    for i, s in enumerate(times):
        v = velocity(target, x, s, cond)
        predictions.append((x + (1 - s) * v).flatten(1))
        if i + 1 < len(times):
            x = x + (times[i + 1] - s) * v  # Euler step of dx/ds = v
    want = aggregate(torch.stack(predictions, dim=1).double(), "l2", 1e-12)
    close(attack_scores(target, "naa", {"t": 80, "stride": 10, "queries": 3}, x0, cond), want)


def test_secmi_inverts_and_returns_along_the_euler_path(target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    x = x0
    for s in (0.0, 0.01):  # Euler inversion 0 -> 0.01 -> 0.02
        x = x + 0.01 * velocity(target, x, s, cond)
    x_far = x + 0.01 * velocity(target, x, 0.02, cond)
    x_back = x_far - 0.01 * velocity(target, x_far, 0.03, cond)
    # the score is measured on the DDPM path, x / r: the flow distance over r(0.02)^2 (one constant for every sample)
    r2 = 0.98**2 + 0.02**2
    close(attack_scores(target, "secmi", {"t_sec": 30, "interval": 10}, x0, cond), -((x_back - x).double() ** 2).flatten(1).sum(1) / r2)


@pytest.mark.parametrize("name", ["loss", "sima", "pia", "naa"])
def test_scores_do_not_depend_on_the_batch(target: FlowTarget, batch, name: str) -> None:  # type: ignore[no-untyped-def]
    x0, cond = batch
    whole = attack_scores(target, name, {}, x0, cond)
    for row in range(x0.shape[0]):
        keys = sample_keys("members", [row])
        one = build_attack(name, {}).score(target, x0[row : row + 1], keys, 7, {k: v[row : row + 1] for k, v in cond.items()})
        assert_scores_close(one.numpy(), whole[row : row + 1].numpy())


def _policy(tmp_path: Path, model: Path, attacks: str = "{loss: {}, sima: {}, pia: {}, naa: {}}", extra: str = "", count: int = 20, more: str = "") -> Path:
    sets = tmp_path / "sets"
    members, nonmembers = write_set(sets, "a", count, seed=1), write_set(sets, "b", count, seed=2)
    body = (
        f"version: 1\nname: f\nmodel: {{path: {model}{extra}}}\ndata: {{members: {members}, nonmembers: {nonmembers}}}\n"
        f"attacks: {attacks}\nthresholds: {{auc: 0.99, tpr_at_1pct_fpr: null}}\nchecks: {{shift_auc: null}}\n"
        f"runtime: {{device: cpu, batch_size: 16, seed: 0}}\n{more}"
    )
    return write_policy(tmp_path / "f.naa.yaml", body)


def test_an_sd3_folder_is_audited_end_to_end_with_its_captions_and_a_reference(tmp_path: Path, sd3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reference = tmp_path / "base"
    make_tiny_sd3(reference, seed=5)
    code = main(["audit", str(_policy(tmp_path, sd3, extra=f", reference: {reference}")), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert "flow matching" in json.dumps(report)
    assert "loss/ref" in json.dumps(report) or "loss (calibrated" in json.dumps(report) or "/ref" in json.dumps(report)


def test_a_ddpm_reference_for_an_sd3_model_is_refused(tmp_path: Path, sd3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tiny_sd import make_tiny_sd

    make_tiny_sd(tmp_path / "sd")
    assert main(["audit", str(_policy(tmp_path, sd3, extra=f", reference: {tmp_path / 'sd'}")), "--quiet"]) == 2
    assert "parametrization" in capsys.readouterr().err


def test_a_reference_without_the_targets_t5_is_refused(tmp_path: Path, sd3: Path) -> None:
    from naa_guard.targets.reference import check_reference

    make_tiny_sd3(tmp_path / "t5", t5=True)
    with pytest.raises(TargetError, match="text_encoder_3"):
        check_reference(read_model_info(tmp_path / "t5"), read_model_info(sd3))
    check_reference(read_model_info(sd3), read_model_info(sd3))  # the same family and architecture: accepted


def _copy(sd3: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(sd3, folder)
    return folder


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda f: shutil.rmtree(f / "transformer"), "missing transformer/"),
        (lambda f: _edit(f / "transformer" / "config.json", in_channels=8), "in_channels 8"),
        (lambda f: _edit(f / "transformer" / "config.json", pooled_projection_dim=32), "pooled_projection_dim"),
        (lambda f: _edit(f / "transformer" / "config.json", sample_size=7), "patch_size"),
        (lambda f: _edit(f / "model_index.json", text_encoder_3=["transformers", "T5EncoderModel"]), "missing text_encoder_3/"),
        (lambda f: _edit(f / "model_index.json", text_encoder_3=["transformers", "CLIPTextModel"]), "T5EncoderModel"),
        (lambda f: _edit(f / "scheduler" / "scheduler_config.json", _class_name="DDPMScheduler"), "flow matching"),
        (lambda f: _edit(f / "model_index.json", _class_name="FluxPipeline"), "Flux pipeline is missing tokenizer_2/|FluxTransformer2DModel"),
        (lambda f: _edit(f / "model_index.json", _class_name="AuraFlowPipeline"), "issue 26"),
    ],
)
def test_bad_sd3_folders_are_refused(tmp_path: Path, sd3: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    folder = _copy(sd3, tmp_path)
    change(folder)
    with pytest.raises(TargetError, match=words):
        read_model_info(folder)


def test_sharded_transformer_weights_load(tmp_path: Path, sd3: Path, target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    from diffusers import SD3Transformer2DModel

    folder = _copy(sd3, tmp_path)
    shutil.rmtree(folder / "transformer")
    SD3Transformer2DModel.from_pretrained(sd3 / "transformer").save_pretrained(folder / "transformer", max_shard_size="20KB")
    assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    sharded = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    x0, cond = batch
    assert torch.equal(sharded.predict_noise(x0, 200, cond), target.predict_noise(x0, 200, cond))


def test_pickle_transformer_weights_are_refused(tmp_path: Path, sd3: Path) -> None:
    folder = _copy(sd3, tmp_path)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(TargetError, match="pickle"):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


def test_a_transformer_missing_a_tensor_is_refused(tmp_path: Path, sd3: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(sd3, tmp_path)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, weights)
    with pytest.raises(TargetError):
        load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


def test_a_flow_model_that_memorised_its_members_fails_the_gate(tmp_path: Path, sd3: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A velocity that denoises toward the nearest member (a perfectly memorising model) must FAIL, not pass."""
    from tiny_sd import read_set

    policy = _policy(tmp_path, sd3, attacks="{loss: {}}")
    members = torch.from_numpy(read_set(tmp_path / "sets" / "a.csv")[0])
    original = FlowTarget.predict_velocity

    def memorised(self: FlowTarget, x_s: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        out = original(self, x_s, t, cond)
        s = self.flow_time(t)
        if s == 0.0:
            return out
        memory = torch.stack(self._encode_images(members))
        nearest = ((x_s[:, None] - (1 - s) * memory[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return (x_s - memory[nearest]) / s  # = e - z0 exactly on a member

    monkeypatch.setattr(FlowTarget, "predict_velocity", memorised)
    assert main(["audit", str(policy), "--json", str(tmp_path / "r.json")]) == 1, capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["attacks"]["loss"]["auc"] > 0.95


def test_tuned_candidates_choose_s_on_the_calibration_split(tmp_path: Path, sd3: Path) -> None:
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy

    result = audit(load_policy(_policy(tmp_path, sd3, attacks="{loss: {t: [100, 300]}, sima: {ts: [0, 20]}}", count=30, more="tune: {fraction: 0.34}\n")), progress=False)
    assert result.attacks["loss"].params["t"] in (100, 300)
    assert np.isfinite(result.attacks["sima"].member_scores).all()


def test_two_processes_and_another_batch_size_give_the_scores_of_one(tmp_path: Path, sd3: Path) -> None:
    from test_distributed import _scores_csv, naa_guard_command

    policy = _policy(tmp_path, sd3, attacks="{loss: {}, sima: {}, pia: {}, naa: {}}")
    one = main(["audit", str(policy), "--quiet", "--scores", str(tmp_path / "one.csv")])
    two = naa_guard_command("audit", str(policy), "--quiet", "--nproc", "2", "--chunk-size", "8", "--batch-size", "5", "--scores", str(tmp_path / "two.csv"))
    assert one == two.returncode, two.stdout + two.stderr
    (one_rows, one_scores), (two_rows, two_scores) = _scores_csv(tmp_path / "one.csv"), _scores_csv(tmp_path / "two.csv")
    assert one_rows == two_rows and set(one_scores) == {"loss", "sima", "pia", "naa"}
    for attack, scores in one_scores.items():
        assert_scores_close(two_scores[attack], scores, err_msg=attack)


def test_the_chunk_store_gives_back_the_scores_without_a_model_call(tmp_path: Path, sd3: Path, target: FlowTarget) -> None:
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy
    from naa_guard.scoring.chunks import ChunkStore

    policy = load_policy(_policy(tmp_path, sd3, attacks="{loss: {}, sima: {}}"))
    first = audit(policy, target=target, progress=False, chunk_store=ChunkStore(tmp_path / "chunks"))
    calls = target.forward_calls
    again = audit(policy, target=target, progress=False, chunk_store=ChunkStore(tmp_path / "chunks"))
    assert target.forward_calls == calls  # every chunk read back
    for name in ("loss", "sima"):
        assert np.array_equal(again.attacks[name].member_scores, first.attacks[name].member_scores)


def _sd3_lora(sd3: Path, folder: Path) -> Path:
    """Save a random LoRA (rank 4) on the tiny SD3 transformer's attention projections with save_lora_weights."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = SD3Transformer2DModel.from_pretrained(sd3 / "transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    StableDiffusion3Pipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return folder


def test_an_sd3_lora_is_applied_at_its_scale_and_checked(tmp_path: Path, sd3: Path, target: FlowTarget, batch) -> None:  # type: ignore[no-untyped-def]
    lora = _sd3_lora(sd3, tmp_path / "lora")
    x0, cond = batch
    base = target.predict_noise(x0, 200, cond)
    full = load_target(read_model_info(sd3, lora=lora), allow_pickle=False, device="cpu", dtype="float32")
    assert (full.predict_noise(x0, 200, cond) - base).abs().max() > 1e-3  # the adapter reaches the transformer
    none = load_target(read_model_info(sd3, lora=lora, lora_scale=0.0), allow_pickle=False, device="cpu", dtype="float32")
    close(none.predict_noise(x0, 200, cond), base)  # scale 0: the base model
    assert read_model_info(sd3, lora=lora).identity_material() != read_model_info(sd3, lora=lora, lora_scale=0.5).identity_material()


def test_an_sd3_lora_with_a_tensor_that_matches_no_layer_is_refused(tmp_path: Path, sd3: Path) -> None:
    from safetensors.torch import load_file, save_file

    file = _sd3_lora(sd3, tmp_path / "lora") / "pytorch_lora_weights.safetensors"
    tensors = load_file(file)
    name = sorted(tensors)[0]
    tensors[name.replace("transformer_blocks.0", "transformer_blocks.7")] = tensors.pop(name)  # a block this transformer lacks
    save_file(tensors, file)
    with pytest.raises(TargetError, match="model.lora|loading the SD3 pipeline failed"):  # an error either way, never the base model
        load_target(read_model_info(sd3, lora=file), allow_pickle=False, device="cpu", dtype="float32")


def test_an_sd3_lora_is_audited_against_its_base_as_the_reference(tmp_path: Path, sd3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lora = _sd3_lora(sd3, tmp_path / "lora")
    policy = _policy(tmp_path, sd3, attacks="{loss: {}, sima: {}}", extra=f", lora: {lora}, reference: {sd3}")
    code = main(["audit", str(policy), "--quiet", "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    assert {"loss", "loss/ref", "sima", "sima/ref"} <= set(json.loads((tmp_path / "r.json").read_text())["attacks"])
