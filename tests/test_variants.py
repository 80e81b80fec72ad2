"""Precision variants (model.variant: fp16 | bf16): exactly the named files load, are checked and key the score cache; a missing or
unnamed variant is refused; init writes the variant a folder's weights exist only as."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_model, write_policy
from tiny_flow import make_tiny_sd3
from tiny_sd import write_set

from naa_guard.cli import main
from naa_guard.errors import PolicyError, TargetError
from naa_guard.policy import load_policy
from naa_guard.samples import files_digest
from naa_guard.targets import load_target, read_model_info

pytestmark = pytest.mark.usefixtures("one_thread")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CAPTIONS = ["a red disc at the left on white", "", "a green square at the centre on teal"]


def outputs(info) -> torch.Tensor:  # type: ignore[no-untyped-def]
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    images = torch.rand(len(CAPTIONS), target.in_channels, target.sample_size, target.sample_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x0, cond = target.encode(images, CAPTIONS)
    return torch.cat([x0.flatten(), target.predict_noise(x0, 300, cond).flatten()])


@pytest.fixture(scope="module")
def sd3_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """plain: seed 0's weights only; both: seed 0 plain + seed 1 as fp16 and bf16 variants; fp16 / bf16: seed 1 rounded to each, saved plain."""
    tmp = tmp_path_factory.mktemp("variants")
    make_tiny_sd3(tmp / "plain")
    shutil.copytree(tmp / "plain", tmp / "both")
    other = make_tiny_sd3(tmp / "seed1", seed=1)
    folders = {"plain": tmp / "plain", "both": tmp / "both"}
    for variant, dtype in DTYPES.items():
        other.to(dtype).save_pretrained(tmp / "both", variant=variant)  # the variant files hold the rounded weights
        other.to(dtype).to(torch.float32).save_pretrained(tmp / variant)  # the same values as plain float32 files
        folders[variant] = tmp / variant
    return folders


@pytest.mark.parametrize("variant", ["fp16", "bf16"])
def test_the_variant_named_loads_its_own_files(sd3_folders: dict[str, Path], variant: str) -> None:
    both = read_model_info(sd3_folders["both"], variant=variant)
    assert torch.equal(outputs(both), outputs(read_model_info(sd3_folders[variant])))  # runtime float32: the rounded weights, exactly
    weights = sorted(p.name for p in both.identity_files() if p.suffix == ".safetensors")
    assert weights and all(f".{variant}." in name for name in weights)


def test_without_a_variant_the_plain_files_load_and_the_keys_differ(sd3_folders: dict[str, Path], tmp_path: Path) -> None:
    plain = read_model_info(sd3_folders["both"])
    assert torch.equal(outputs(plain), outputs(read_model_info(sd3_folders["plain"])))
    assert not any(".fp16." in p.name or ".bf16." in p.name for p in plain.identity_files())
    keys = {v: files_digest(read_model_info(sd3_folders["both"], variant=v).identity_files()) for v in (None, "fp16", "bf16")}
    assert len(set(keys.values())) == 3
    # swapping the fp16 transformer changes the fp16 key and no other
    folder = tmp_path / "both"
    shutil.copytree(sd3_folders["both"], folder)
    (folder / "transformer" / "diffusion_pytorch_model.fp16.safetensors").write_bytes((folder / "transformer" / "diffusion_pytorch_model.bf16.safetensors").read_bytes())
    moved = {v: files_digest(read_model_info(folder, variant=v).identity_files()) for v in (None, "fp16", "bf16")}
    assert moved["fp16"] != keys["fp16"] and moved[None] == keys[None] and moved["bf16"] == keys["bf16"]


def test_a_missing_or_unnamed_variant_is_refused(tmp_path: Path, sd3_folders: dict[str, Path]) -> None:
    with pytest.raises(TargetError, match=r"vae: model.variant is 'fp16', but this component has no fp16 weights .*found diffusion_pytorch_model.safetensors.*remove model.variant"):
        read_model_info(sd3_folders["plain"], variant="fp16")
    only = tmp_path / "only_bf16"
    shutil.copytree(sd3_folders["both"], only)
    for file in [*only.glob("*/*.safetensors")]:
        if ".bf16." not in file.name:
            file.unlink()
    with pytest.raises(TargetError, match=r"exist only as the precision variant bf16 .*Set model.variant: bf16"):
        read_model_info(only)
    with pytest.raises(TargetError, match=r"has no fp16 weights.*set model.variant: bf16"):
        read_model_info(only, variant="fp16")
    (only / "text_encoder" / "model.bf16.safetensors").unlink()
    with pytest.raises(TargetError, match=r"text_encoder: model.variant is 'bf16', but this component has no bf16 weights"):
        read_model_info(only, variant="bf16")


def test_a_sharded_variant_and_a_pixel_variant_load(tmp_path: Path) -> None:
    from diffusers import UNet2DModel

    folder = make_tiny_model(tmp_path / "pixel")
    unet = UNet2DModel.from_pretrained(folder / "unet")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    unet.half().save_pretrained(folder / "unet", variant="fp16", max_shard_size="20KB")
    assert len(list((folder / "unet").glob("diffusion_pytorch_model.fp16-0000*-of-*.safetensors"))) > 1
    with pytest.raises(TargetError, match="Set model.variant: fp16"):
        read_model_info(folder)
    info = read_model_info(folder, variant="fp16")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors.index.fp16.json") in info.identity_files()
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    rounded = make_tiny_model(tmp_path / "rounded")
    unet.half().float().save_pretrained(rounded / "unet")  # the same values, plain float32 files
    expected = load_target(read_model_info(rounded), allow_pickle=False, device="cpu", dtype="float32")
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(target.predict_noise(x, 5), expected.predict_noise(x, 5))


def test_the_variant_key_is_validated_documented_and_written_by_init(tmp_path: Path, sd3_folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    members, nonmembers = write_set(tmp_path, "a", 20, seed=1), write_set(tmp_path, "b", 20, seed=2)
    body = f"version: 1\nname: v\nmodel: {{path: {sd3_folders['both']}, variant: fp32}}\ndata: {{members: {members}, nonmembers: {nonmembers}}}\nattacks: {{loss: {{}}}}\n"
    policy = write_policy(tmp_path / "v.naa.yaml", body)
    with pytest.raises(PolicyError, match=r"(?s)v.naa.yaml.*model.variant: Input should be .fp16. or .bf16."):
        load_policy(policy)
    assert main(["schema"]) == 0 and "variant" in capsys.readouterr().out
    only = tmp_path / "only"
    shutil.copytree(sd3_folders["both"], only)
    for file in [*only.glob("*/*.safetensors")]:
        if ".fp16." not in file.name:
            file.unlink()
    output = tmp_path / "init.naa.yaml"
    assert main(["init", str(only), str(members), str(nonmembers), "-o", str(output)]) == 0, capsys.readouterr().err
    assert load_policy(output).model.variant == "fp16"
    output.unlink()
    assert main(["init", str(sd3_folders["both"]), str(members), str(nonmembers), "-o", str(output)]) == 0
    assert load_policy(output).model.variant is None


def test_a_variant_beside_an_sd_single_file_is_refused(tmp_path: Path) -> None:
    """An SD 1.x / 2.x / SDXL single file holds every weight: a variant would choose nothing, so the key is refused, not ignored."""
    from conftest import FIXTURES
    from ldm_layout import write_ldm_checkpoint

    from naa_guard.targets.detect import read_single_file_info

    checkpoint = write_ldm_checkpoint(FIXTURES / "tiny_sd" / "model", tmp_path / "sd.safetensors")
    with pytest.raises(TargetError, match="holds every weight.*remove model.variant"):
        read_single_file_info(checkpoint, FIXTURES / "tiny_sd" / "model", variant="fp16")


def test_text_encoder_weights_load_as_stored_whatever_dtype_their_config_names(tmp_path: Path, sd3_folders: dict[str, Path]) -> None:
    """transformers takes config.json's dtype (float16 here, as a variant save writes it) unless told: float32 weights would be rounded."""
    import json

    folder = tmp_path / "config_says_fp16"
    shutil.copytree(sd3_folders["plain"], folder)
    for encoder in ("text_encoder", "text_encoder_2"):
        config = json.loads((folder / encoder / "config.json").read_text())
        (folder / encoder / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    assert torch.equal(outputs(read_model_info(folder)), outputs(read_model_info(sd3_folders["plain"])))


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_a_variant_loads_for_sd_and_flux_pipelines_too(tmp_path: Path, family: str) -> None:
    from diffusers import DiffusionPipeline
    from tiny_flow import make_tiny_flux

    if family == "sd":
        from conftest import FIXTURES

        shutil.copytree(FIXTURES / "tiny_sd" / "model", tmp_path / "both")
        pipeline = DiffusionPipeline.from_pretrained(tmp_path / "both")
    else:
        pipeline = make_tiny_flux(tmp_path / "both", seed=2)
    torch.manual_seed(5)
    for module in (pipeline.unet if family == "sd" else pipeline.transformer, pipeline.vae):
        for parameter in module.parameters():
            parameter.data += 0.01 * torch.randn_like(parameter)  # the variant's weights differ from the plain ones
    pipeline.to(torch.float16).save_pretrained(tmp_path / "both", variant="fp16")
    pipeline.to(torch.float32).save_pretrained(tmp_path / "rounded")
    assert torch.equal(outputs(read_model_info(tmp_path / "both", variant="fp16")), outputs(read_model_info(tmp_path / "rounded")))
    assert not torch.equal(outputs(read_model_info(tmp_path / "both")), outputs(read_model_info(tmp_path / "rounded")))


def test_the_reports_a_reviewer_reads_state_the_parametrization_and_the_variant(tmp_path: Path, sd3_folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """report.md and report.html say what was audited (the flow parametrization, the T5 length, the variant's files), as report.json does."""
    sets = tmp_path / "sets"
    members, nonmembers = write_set(sets, "a", 20, seed=1), write_set(sets, "b", 20, seed=2)
    policy = write_policy(
        tmp_path / "v.naa.yaml",
        f"version: 1\nname: v\nmodel: {{path: {sd3_folders['both']}, variant: bf16}}\ndata: {{members: {members}, nonmembers: {nonmembers}}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nchecks: {shift_auc: null}\n"
        f"runtime: {{device: cpu, batch_size: 16, seed: 0}}\nreport: {{dir: {tmp_path / 'out'}}}\n",
    )
    assert main(["audit", str(policy), "--quiet"]) in (0, 1), capsys.readouterr().err
    for name in ("report.md", "report.html"):
        text = (tmp_path / "out" / name).read_text(encoding="utf-8")
        assert "flow matching: x_s = (1 - s) z0 + s e" in text and "time input 1000 s" in text, name
        assert "no T5: 256 zero tokens" in text and "the bf16 precision variant" in text, name
