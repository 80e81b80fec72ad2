"""Single-file SD3 and Flux checkpoints (model.single_file + model.config): all-in-one and transformer-only forms load strictly
and score as their diffusers folder; every tensor missing, extra or unread, a LoRA, or the other family's file is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_policy
from flow_layout import write_flow_checkpoint
from safetensors.torch import load_file, save_file
from tiny_flow import make_tiny_flux, make_tiny_sd3
from tiny_sd import write_set

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.policy import load_policy
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.detect import read_single_file_info

pytestmark = pytest.mark.usefixtures("one_thread")
CAPTIONS = ["a red disc at the left on white", "", "a green square at the centre on teal"]


def _identity_clip_l(folder: Path) -> None:
    """Give SD3's CLIP-L the identity projection its original single-file layout implies (it stores none)."""
    file = folder / "text_encoder" / "model.safetensors"
    tensors = load_file(file)
    tensors["text_projection.weight"] = torch.eye(tensors["text_projection.weight"].shape[0])
    save_file(tensors, file)


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3") / "model"
    make_tiny_sd3(folder, t5=True)
    _identity_clip_l(folder)
    return folder


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flux") / "model"
    make_tiny_flux(folder)
    return folder


def configs_only(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns("*.safetensors"))
    return target


def predictions(info) -> torch.Tensor:  # type: ignore[no-untyped-def]
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x0, cond = target.encode(images, CAPTIONS)
    return torch.cat([x0.flatten(), *(target.predict_noise(x0, t, cond).flatten() for t in (100, 600))])


@pytest.mark.parametrize(("family", "form"), [("sd3", "all-in-one"), ("sd3", "transformer"), ("flux", "all-in-one"), ("flux", "transformer")])
def test_a_flow_single_file_loads_the_folders_model(tmp_path: Path, sd3: Path, flux: Path, family: str, form: str) -> None:
    folder = sd3 if family == "sd3" else flux
    parts = ("transformer", "vae", "text") if form == "all-in-one" else ("transformer",)
    checkpoint = write_flow_checkpoint(folder, tmp_path / "model.safetensors", family, parts=parts)
    # all in one: the config folder needs no weights; the transformer alone: the rest loads from the folder's own weights
    config = configs_only(folder, tmp_path / "base") if form == "all-in-one" else folder
    info = read_single_file_info(checkpoint, config)
    assert torch.equal(predictions(info), predictions(read_model_info(folder)))
    weights = [p.name for p in info.identity_files() if p.suffix == ".safetensors"]
    if form == "all-in-one":
        assert weights == ["model.safetensors"] and set(info.weight_sources().values()) == {f"model.single_file {checkpoint}"}
    else:  # the key covers the file and every folder weight file that loads, and names none of the transformer's
        assert checkpoint in info.identity_files() and folder / "transformer" / "diffusion_pytorch_model.safetensors" not in info.identity_files()
        assert folder / "vae" / "diffusion_pytorch_model.safetensors" in info.identity_files()
        assert info.weight_sources()["transformer"] == f"model.single_file {checkpoint}" and "vae" in info.weight_sources()["vae"]


def test_flux_transformer_conversion_matches_diffusers_at_the_released_widths() -> None:
    """At Flux.1's widths (3072, MLP 12288) our size-free conversion and diffusers' agree tensor for tensor (1 column each: cheap)."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from naa_guard.targets.flux_layout import convert_flux_transformer

    inner, mlp = 3072, 12288
    rows = {"double_blocks.0.img_attn.qkv": 3 * inner, "double_blocks.0.txt_attn.qkv": 3 * inner, "single_blocks.0.linear1": 3 * inner + mlp, "final_layer.adaLN_modulation.1": 2 * inner}
    plain = [
        "time_in.in_layer", "time_in.out_layer", "vector_in.in_layer", "vector_in.out_layer", "guidance_in.in_layer", "guidance_in.out_layer", "txt_in", "img_in",
        "double_blocks.0.img_mod.lin", "double_blocks.0.txt_mod.lin", "double_blocks.0.img_mlp.0", "double_blocks.0.img_mlp.2", "double_blocks.0.txt_mlp.0",
        "double_blocks.0.txt_mlp.2", "double_blocks.0.img_attn.proj", "double_blocks.0.txt_attn.proj", "single_blocks.0.modulation.lin", "single_blocks.0.linear2", "final_layer.linear",
    ]  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    state = {f"{name}.{suffix}": torch.randn(rows.get(name, 5), 1, generator=generator) for name in [*plain, *rows] for suffix in ("weight", "bias")}
    for norm in ("double_blocks.0.img_attn.norm.query_norm", "double_blocks.0.img_attn.norm.key_norm", "double_blocks.0.txt_attn.norm.query_norm",
                 "double_blocks.0.txt_attn.norm.key_norm", "single_blocks.0.norm.query_norm", "single_blocks.0.norm.key_norm"):  # fmt: skip
        state[f"{norm}.scale"] = torch.randn(4, generator=generator)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    widths = {"attn.to_q": inner, "attn.to_k": inner, "attn.to_v": inner, "attn.add_q_proj": inner, "attn.add_k_proj": inner, "attn.add_v_proj": inner, "proj_mlp": mlp}
    shapes = {f"{block}.{part}.{suffix}": (width, 1) for block in ("transformer_blocks.0", "single_transformer_blocks.0") for part, width in widths.items() for suffix in ("weight", "bias")}
    ours, left, unsplit = convert_flux_transformer(dict(state), shapes)
    assert not left and not unsplit and sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def _damaged(folder: Path, tmp_path: Path, family: str, damage: str) -> Path:
    checkpoint = write_flow_checkpoint(folder, tmp_path / "model.safetensors", family)
    state = load_file(checkpoint)
    block = "model.diffusion_model.joint_blocks.0.x_block.mlp.fc2.weight" if family == "sd3" else "model.diffusion_model.single_blocks.0.linear2.weight"
    if damage == "missing":
        state.pop(block)
    elif damage == "extra":
        state[block.replace(".0.", ".1.")] = state[block].clone()
    elif damage == "unread":
        state["model.diffusion_model.some_adapter.weight"] = torch.ones(2)
    elif damage == "stray":
        state["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(2)
    elif damage == "vae":
        state.pop("first_stage_model.decoder.conv_out.bias")
    elif damage == "reshaped":
        state[block] = state[block][:, :-1].contiguous()
    save_file(state, checkpoint)
    return checkpoint


@pytest.mark.parametrize(
    ("family", "damage", "words"),
    [
        ("sd3", "missing", r"SD3 transformer lacks 'joint_blocks.0.x_block.mlp.fc2.weight'"),
        ("sd3", "unread", r"transformer weights do not match.*extra or unread \['some_adapter.weight'\]"),
        ("sd3", "stray", r"belong to no component of this sd3 pipeline"),
        ("sd3", "vae", r"vae weights do not match.*1 missing \['decoder.conv_out.bias'\]"),
        ("flux", "missing", r"transformer weights do not match.*1 missing \['single_transformer_blocks.0.proj_out.weight'\]"),
        ("flux", "extra", r"transformer weights do not match.*extra.*single_transformer_blocks.1.proj_out.weight"),
        ("flux", "reshaped", r"transformer weights do not match.*1 reshaped \['single_transformer_blocks.0.proj_out.weight'\]"),
    ],
)
def test_a_damaged_flow_single_file_is_refused(tmp_path: Path, sd3: Path, flux: Path, family: str, damage: str, words: str) -> None:
    folder = sd3 if family == "sd3" else flux
    checkpoint = _damaged(folder, tmp_path, family, damage)
    with pytest.raises(TargetError, match=words):
        load_target(read_single_file_info(checkpoint, configs_only(folder, tmp_path / "base")), allow_pickle=False, device="cpu", dtype="float32")


def test_wrong_family_lora_and_pickle_single_files_are_refused(tmp_path: Path, sd3: Path, flux: Path) -> None:
    flux_file = write_flow_checkpoint(flux, tmp_path / "flux.safetensors", "flux", parts=("transformer",))
    with pytest.raises(TargetError, match=r"a Flux \(double_blocks\) transformer, but model.config describes a SD3"):
        read_single_file_info(flux_file, sd3)
    lora = tmp_path / "lora.safetensors"
    save_file({f"lora_unet_double_blocks_0_img_attn_qkv.lora_{p}.weight": torch.ones(2, 2) for p in ("up", "down")}, lora)
    with pytest.raises(TargetError, match=r"this is a LoRA adapter.*model\.lora"):
        read_single_file_info(lora, flux)
    pickle = tmp_path / "flux.ckpt"
    torch.save(load_file(flux_file), pickle)
    info = read_single_file_info(pickle, flux)
    with pytest.raises(TargetError, match=r"pickle checkpoint.*model.allow_pickle: true"):
        load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    # a pickle is unread until allowed: the key covers every folder weight that could load
    assert flux / "transformer" / "diffusion_pytorch_model.safetensors" in info.identity_files() and pickle in info.identity_files()
    assert torch.equal(predictions_allowed(info), predictions(read_model_info(flux)))


def predictions_allowed(info) -> torch.Tensor:  # type: ignore[no-untyped-def]
    target = load_target(info, allow_pickle=True, device="cpu", dtype="float32")
    images = torch.rand(len(CAPTIONS), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x0, cond = target.encode(images, CAPTIONS)
    return torch.cat([x0.flatten(), *(target.predict_noise(x0, t, cond).flatten() for t in (100, 600))])


def test_a_file_the_config_lacks_a_part_for_and_a_config_without_weights_are_refused(tmp_path: Path, sd3: Path, flux: Path) -> None:
    no_t5 = tmp_path / "no_t5"
    make_tiny_sd3(no_t5)
    with pytest.raises(TargetError, match=r"holds text_encoder_3 weights \(text_encoders.t5xxl.transformer.\), which the pipeline in model.config does not have"):
        read_single_file_info(write_flow_checkpoint(sd3, tmp_path / "t5.safetensors", "sd3"), no_t5)
    alone = write_flow_checkpoint(flux, tmp_path / "alone.safetensors", "flux", parts=("transformer",))
    with pytest.raises(TargetError, match=r"holds no vae weights, so they load from model.config: .*vae: no weights found"):
        read_single_file_info(alone, configs_only(flux, tmp_path / "base"))


def test_a_flow_single_file_audits_like_its_folder_and_init_writes_its_policy(tmp_path: Path, flux: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members, nonmembers = write_set(tmp_path, "a", 20, seed=1), write_set(tmp_path, "b", 20, seed=2)
    checkpoint = write_flow_checkpoint(flux, tmp_path / "flux1-tiny.safetensors", "flux", parts=("transformer",))

    def policy(name: str, model: str) -> Path:
        return write_policy(
            tmp_path / f"{name}.naa.yaml",
            f"version: 1\nname: {name}\nmodel: {{{model}}}\ndata: {{members: {members}, nonmembers: {nonmembers}}}\n"
            "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nruntime: {device: cpu, batch_size: 16, seed: 0}\n"
            f"report: {{dir: {tmp_path / name}}}\n",
        )

    folder = audit(load_policy(policy("folder", f"path: {flux}")), progress=False).attacks["loss"]
    single = audit(load_policy(policy("single", f"single_file: {checkpoint}, config: {flux}")), progress=False)
    np.testing.assert_array_equal(single.attacks["loss"].member_scores, folder.member_scores)
    np.testing.assert_array_equal(single.attacks["loss"].nonmember_scores, folder.nonmember_scores)
    output = tmp_path / "init.naa.yaml"
    assert main(["init", str(checkpoint), str(members), str(nonmembers), "--config", str(flux), "-o", str(output)]) == 0, capsys.readouterr().err
    assert 'single_file: "flux1-tiny.safetensors"' in output.read_text()
    written = load_policy(output).model
    assert (written.single_file, written.config, written.variant) == (checkpoint, flux, None)
    layout = json.loads(json.dumps(single.fingerprint))["model_layout"]  # report.json's: where each weight came from, said
    assert layout["weights"]["transformer"] == f"model.single_file {checkpoint}" and layout["weights"]["vae"] == str(flux / "vae" / "diffusion_pytorch_model.safetensors")
