"""Flux LoRAs (issue 26 item 4): the diffusers / peft, ai-toolkit, kohya and ComfyUI layouts load as
diffusers' FluxPipeline.load_lora_weights loads them, and each layer's update is checked against the
file's (naa_guard/targets/loralayers.py): a key no layer takes, a dropped or misplaced tensor, another
strength and another architecture's LoRA are errors, never a weaker model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from test_flow import CAPTIONS, _policy, close
from test_flux import pipeline_velocity
from tiny_flow import make_tiny_flux
from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info

pytestmark = pytest.mark.usefixtures("one_thread")
RANK = 4


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fluxlora") / "model"
    make_tiny_flux(folder)
    return folder


@pytest.fixture(scope="module")
def inputs(flux: Path) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """A noisy latent batch, the base pipeline's condition for the captions, and the base diffusers velocity there."""
    target = load_target(read_model_info(flux), allow_pickle=False, device="cpu", dtype="float32")
    x0, cond = target.encode(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, CAPTIONS[:2])
    x_s = 0.7 * x0 + 0.3 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    return x_s, cond, _diffusers_velocity(flux, None, x_s, cond)


def _pair(out: int, inn: int, seed: int, rank: int = RANK) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rank, inn, generator=generator) * 0.5, torch.randn(out, rank, generator=generator) * 0.5


def _save(tensors: dict[str, torch.Tensor], file: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, file, metadata=metadata)
    return file


def peft_lora(flux: Path, folder: Path, *, text_encoder: bool = False, alpha: int = RANK, metadata: bool = False) -> Path:
    """Save a random LoRA on the transformer (and the CLIP encoder) with FluxPipeline.save_lora_weights."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import CLIPTextModel

    transformer = FluxTransformer2DModel.from_pretrained(flux / "transformer")
    transformer.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "proj_out", "norm.linear", "ff.net.2"]))
    layers: dict[str, Any] = {}
    if text_encoder:
        clip = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["q_proj", "v_proj"]), CLIPTextModel.from_pretrained(flux / "text_encoder"))
    torch.manual_seed(3)
    with torch.no_grad():
        for model in [transformer] + ([clip] if text_encoder else []):
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
    if text_encoder:
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(clip)
    if metadata:
        layers["transformer_lora_adapter_metadata"] = transformer.peft_config["default"].to_dict()
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(transformer), **layers)
    return folder / "pytorch_lora_weights.safetensors"


def kohya_tensors(alpha: float | None = 2.0) -> dict[str, torch.Tensor]:
    """A kohya (sd-scripts) Flux LoRA on the tiny transformer: fused qkv of a double block, MLP, modulation, single-block output."""
    tensors = {}
    for seed, (module, out, inn) in enumerate([
        ("lora_unet_double_blocks_0_img_attn_qkv", 48, 16), ("lora_unet_double_blocks_0_txt_attn_qkv", 48, 16),
        ("lora_unet_double_blocks_0_txt_mlp_0", 64, 16), ("lora_unet_double_blocks_0_img_mod_lin", 96, 16),
        ("lora_unet_single_blocks_0_linear2", 16, 80), ("lora_unet_single_blocks_0_modulation_lin", 48, 16),
    ]):  # fmt: skip
        down, up = _pair(out, inn, seed)
        tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"] = down, up
        if alpha is not None:
            tensors[f"{module}.alpha"] = torch.tensor(alpha * (1 + seed % 2))  # alpha / rank 0.5 and 1
    return tensors


def ai_toolkit_tensors() -> dict[str, torch.Tensor]:
    """An ai-toolkit Flux LoRA: diffusers layer names with lora_A / lora_B, and an alpha per module."""
    tensors = {}
    for seed, (layer, out, inn) in enumerate([("transformer_blocks.0.attn.to_q", 16, 16), ("transformer_blocks.0.attn.to_add_out", 16, 16), ("single_transformer_blocks.0.proj_mlp", 64, 16)]):
        down, up = _pair(out, inn, 10 + seed)
        tensors[f"transformer.{layer}.lora_A.weight"], tensors[f"transformer.{layer}.lora_B.weight"] = down, up
        tensors[f"transformer.{layer}.alpha"] = torch.tensor(2.0)
    return tensors


def comfy_tensors() -> dict[str, torch.Tensor]:
    """The kohya layout as ComfyUI spells it (diffusion_model., dots)."""
    renamed = {}
    for name, tensor in kohya_tensors().items():
        module, _, kind = name.partition(".")
        block = module.removeprefix("lora_unet_")
        parts = block.split("_")
        dotted = f"{parts[0]}_{parts[1]}.{parts[2]}.{'_'.join(parts[3:])}"  # double_blocks.0.img_attn_qkv
        dotted = dotted.replace("img_attn_", "img_attn.").replace("txt_attn_", "txt_attn.").replace("txt_mlp_", "txt_mlp.").replace("img_mod_", "img_mod.").replace("modulation_lin", "modulation.lin")
        renamed[f"diffusion_model.{dotted}.{kind}"] = tensor
    return renamed


def _diffusers_velocity(flux: Path, file: Path | None, x_s: torch.Tensor, cond: Any, scale: float = 1.0) -> torch.Tensor:
    from diffusers import FluxPipeline

    pipeline = FluxPipeline.from_pretrained(flux)
    if file is not None:
        pipeline.load_lora_weights(file.parent, weight_name=file.name, adapter_name="x")
        pipeline.set_adapters(["x"], adapter_weights=[scale])
    return pipeline_velocity(pipeline, x_s, 0.3, cond)


def _velocity(flux: Path, file: Path | None, x_s: torch.Tensor, cond: Any, scale: float = 1.0) -> torch.Tensor:
    target = load_target(read_model_info(flux, lora=file, lora_scale=scale), allow_pickle=False, device="cpu", dtype="float32")
    return target.predict_velocity(x_s, 300, cond)


@pytest.mark.parametrize("layout", ["diffusers", "diffusers-metadata", "ai-toolkit", "kohya", "kohya-no-alpha", "comfyui"])
def test_each_layout_changes_the_velocity_as_diffusers_does(tmp_path: Path, flux: Path, inputs, layout: str) -> None:  # type: ignore[no-untyped-def]
    x_s, cond, base = inputs
    files = {
        "diffusers": lambda: peft_lora(flux, tmp_path / "lora"),
        "diffusers-metadata": lambda: peft_lora(flux, tmp_path / "lora", alpha=8, metadata=True),  # alpha 8 / rank 4 from the header
        "ai-toolkit": lambda: _save(ai_toolkit_tensors(), tmp_path / "ait.safetensors"),
        "kohya": lambda: _save(kohya_tensors(), tmp_path / "kohya.safetensors"),
        "kohya-no-alpha": lambda: _save(kohya_tensors(alpha=None), tmp_path / "kohya.safetensors"),
        "comfyui": lambda: _save(comfy_tensors(), tmp_path / "comfy.safetensors"),
    }
    file = files[layout]()
    want = _diffusers_velocity(flux, file, x_s, cond)
    got = _velocity(flux, file, x_s, cond)
    close(got, want)
    assert (got - base).abs().max() > 1e-3  # the adapter reaches the transformer


def test_lora_scale_zero_is_the_base_and_a_half_is_diffusers_at_a_half(tmp_path: Path, flux: Path, inputs) -> None:  # type: ignore[no-untyped-def]
    x_s, cond, base = inputs
    file = _save(kohya_tensors(), tmp_path / "kohya.safetensors")
    close(_velocity(flux, file, x_s, cond, scale=0.0), base)
    close(_velocity(flux, file, x_s, cond, scale=0.5), _diffusers_velocity(flux, file, x_s, cond, scale=0.5))
    assert read_model_info(flux, lora=file).identity_material() != read_model_info(flux, lora=file, lora_scale=0.5).identity_material()


def test_a_text_encoder_lora_conditions_as_the_pipelines_encode_prompt(tmp_path: Path, flux: Path) -> None:
    from diffusers import FluxPipeline

    file = peft_lora(flux, tmp_path / "lora", text_encoder=True)
    target = load_target(read_model_info(flux, lora=file), allow_pickle=False, device="cpu", dtype="float32")
    pipeline = FluxPipeline.from_pretrained(flux)
    pipeline.load_lora_weights(file.parent, adapter_name="x")
    _, pooled, _ = pipeline.encode_prompt(CAPTIONS[:2], CAPTIONS[:2])
    _, cond = target.encode(torch.zeros(2, 3, 32, 32), CAPTIONS[:2])
    close(cond["pooled_projections"], pooled.detach())
    _, base = FluxPipeline.from_pretrained(flux).encode_prompt(CAPTIONS[:2], CAPTIONS[:2])[:2]
    assert (pooled - base).abs().max() > 1e-3  # the CLIP LoRA changes the condition


def _refused(flux: Path, file: Path, words: str) -> str:
    with pytest.raises(TargetError, match=words) as error:
        load_target(read_model_info(flux, lora=file), allow_pickle=False, device="cpu", dtype="float32")
    return str(error.value)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.update({"lora_unet_bogus_layer.lora_down.weight": torch.zeros(4, 16), "lora_unet_bogus_layer.lora_up.weight": torch.zeros(16, 4)}), "name no layer"),
        (lambda t: t.update({"transformer.scale_shift_table": torch.zeros(2, 16)}), "name no layer"),  # a non-LoRA tensor diffusers would drop
        (lambda t: t.update({k.replace("blocks_0_", "blocks_3_"): v.clone() for k, v in t.items() if "double_blocks_0_txt_mlp_0" in k}), "does not have"),  # a block the model lacks
        (lambda t: t.update({"lora_unet_img_in.lora_down.weight": torch.zeros(4, 16), "lora_unet_img_in.lora_up.weight": torch.ones(16, 4)}), "carry no adapter"),  # diffusers 0.42 drops it
        (lambda t: t.pop("lora_unet_double_blocks_0_img_mod_lin.lora_up.weight"), "no up weight"),
        (lambda t: t.update({"lora_unet_double_blocks_0_img_mod_lin.lora_up.weight": torch.zeros(80, 4)}), "take"),  # another width
    ],
)
def test_a_kohya_file_with_a_key_no_layer_takes_is_refused(tmp_path: Path, flux: Path, change, words: str) -> None:  # type: ignore[no-untyped-def]
    tensors = kohya_tensors()
    change(tensors)
    _refused(flux, _save(tensors, tmp_path / "bad.safetensors"), words)


def test_another_strength_than_the_file_declares_is_refused(tmp_path: Path, flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = peft_lora(flux, tmp_path / "lora")
    (file.parent / "adapter_config.json").write_text(json.dumps({"r": RANK, "lora_alpha": 8}))  # declares 2; diffusers reads no adapter_config
    _refused(flux, file, "not the update the file declares")
    # a converter that drops kohya's alphas (as older diffusers did for some layers): the weights load, at another strength
    import diffusers.loaders.lora_conversion_utils as conversion

    original = conversion._convert_kohya_flux_lora_to_diffusers
    monkeypatch.setattr(conversion, "_convert_kohya_flux_lora_to_diffusers", lambda sd: original({k: v for k, v in sd.items() if not k.endswith(".alpha")}))
    monkeypatch.setattr("diffusers.loaders.lora_pipeline._convert_kohya_flux_lora_to_diffusers", conversion._convert_kohya_flux_lora_to_diffusers)
    _refused(flux, _save(kohya_tensors(), tmp_path / "kohya.safetensors"), "alpha 2 / rank 4")


def test_a_tensor_loaded_into_another_layer_of_the_same_shape_is_refused(tmp_path: Path, flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value of the file reaches the model, but into the wrong layers: found by value, wrong by layer."""
    import diffusers.loaders.lora_conversion_utils as conversion

    original = conversion._convert_kohya_flux_lora_to_diffusers

    def swapped(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = original(state_dict)
        swap = {"attn.to_q.": "attn.to_k.", "attn.to_k.": "attn.to_q."}
        return {next((k.replace(a, b) for a, b in swap.items() if a in k), k): v for k, v in out.items()}

    monkeypatch.setattr("diffusers.loaders.lora_pipeline._convert_kohya_flux_lora_to_diffusers", swapped)
    _refused(flux, _save(kohya_tensors(alpha=None), tmp_path / "kohya.safetensors"), "transformer_blocks.0.attn.to_[qk]")


def test_a_lora_for_another_architecture_is_refused_naming_it(tmp_path: Path, flux: Path) -> None:
    from conftest import FIXTURES

    sd_lora = FIXTURES / "tiny_sd" / "lora" / "pytorch_lora_weights.safetensors"
    assert "Stable Diffusion UNet LoRA" in _refused(flux, sd_lora, "this file is")
    sd3 = {**{f"transformer.transformer_blocks.0.attn.to_q.{k}.weight": t for k, t in zip(("lora_A", "lora_B"), _pair(16, 16, 0))}}
    sd3.update({f"text_encoder_2.encoder.layers.0.self_attn.q_proj.{k}.weight": t for k, t in zip(("lora_A", "lora_B"), _pair(32, 32, 1))})
    assert "an SD3 LoRA" in _refused(flux, _save(sd3, tmp_path / "sd3.safetensors"), "this file is")
    t5 = {f"text_encoder_2.encoder.block.0.layer.0.SelfAttention.q.{k}.weight": t for k, t in zip(("lora_A", "lora_B"), _pair(16, 80, 2))}
    _refused(flux, _save({**ai_toolkit_tensors(), **t5}, tmp_path / "t5.safetensors"), "T5 encoder")


def test_a_flux_lora_on_sd3_and_sd_is_refused_naming_it(tmp_path: Path) -> None:
    from conftest import FIXTURES
    from tiny_flow import make_tiny_sd3

    file = _save(kohya_tensors(), tmp_path / "kohya.safetensors")
    make_tiny_sd3(tmp_path / "sd3")
    for model in (tmp_path / "sd3", FIXTURES / "tiny_sd" / "model"):
        with pytest.raises(TargetError, match="this file is a Flux LoRA"):
            load_target(read_model_info(model, lora=file), allow_pickle=False, device="cpu", dtype="float32")


def test_a_flux_lora_is_audited_against_its_base_as_the_reference(tmp_path: Path, flux: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _save(kohya_tensors(), tmp_path / "kohya.safetensors")
    policy = _policy(tmp_path, flux, attacks="{loss: {}, sima: {t: 10}}", extra=f", lora: {file}, reference: base")
    code = main(["audit", str(policy), "--quiet", "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.out + captured.err
    attacks = json.loads((tmp_path / "r.json").read_text())["attacks"]
    assert {"loss", "loss/ref", "sima", "sima/ref"} <= set(attacks)


def test_init_writes_reference_base_for_a_flux_lora(tmp_path: Path, flux: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from naa_guard.policy import load_policy
    from tiny_sd import write_set

    file = _save(ai_toolkit_tensors(), tmp_path / "lora" / "ait.safetensors")
    members, nonmembers = write_set(tmp_path, "a", 20, seed=1), write_set(tmp_path, "b", 20, seed=2)
    output = tmp_path / "p.naa.yaml"
    assert main(["init", str(flux), str(members), str(nonmembers), "--lora", str(file), "-o", str(output)]) == 0, capsys.readouterr().err
    policy = load_policy(output)
    assert policy.model.lora == file.resolve() and policy.model.reference == "base"
    info = read_model_info(policy.model.path, lora=policy.model.lora)  # what the audit reads: a Flux LoRA is taken
    assert info.lora == file.resolve() and info.family == "flux"



def test_a_memorising_flux_lora_fails_the_gate_raw_and_calibrated(tmp_path: Path, flux: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The pipeline with the adapter denoises toward the nearest member (a perfectly memorising LoRA, simulated:
    training one on the tiny Flux to memorise is too slow here); the base without it does not. Both rows FAIL."""
    from test_flux import FluxTarget
    from tiny_sd import read_set

    file = _save(kohya_tensors(), tmp_path / "kohya.safetensors")
    policy = _policy(tmp_path, flux, attacks="{loss: {}}", extra=f", lora: {file}, reference: base")
    members = torch.from_numpy(read_set(tmp_path / "sets" / "a.csv")[0])
    original = FluxTarget.predict_velocity

    def memorised(self: FluxTarget, x_s: torch.Tensor, t: int, cond: object = None) -> torch.Tensor:
        out = original(self, x_s, t, cond)
        s = self.flow_time(t)
        if s == 0.0 or not getattr(self.transformer, "peft_config", None):  # the base (reference) is left as it is
            return out
        memory = torch.stack(self._encode_images(members))
        nearest = ((x_s[:, None] - (1 - s) * memory[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return (x_s - memory[nearest]) / s

    monkeypatch.setattr(FluxTarget, "predict_velocity", memorised)
    assert main(["audit", str(policy), "--json", str(tmp_path / "r.json")]) == 1, capsys.readouterr().out
    attacks = json.loads((tmp_path / "r.json").read_text())["attacks"]
    assert attacks["loss"]["auc"] > 0.95 and attacks["loss/ref"]["auc"] > 0.95
