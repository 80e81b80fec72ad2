"""LoRA strength (naa_guard/targets/lorastrength.py): alpha / rank x lora_scale as the file declares it,
measured on the tiny SD fixture's UNet, and an alpha that diffusers / peft did not apply is an error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import FIXTURES

from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info

SD = FIXTURES / "tiny_sd"
PLAIN = SD / "lora" / "pytorch_lora_weights.safetensors"  # rank 8, no alpha: scaling 1
RANK = 8
DOWN = re.compile(r"^(?P<module>.+?)(?:\.lora\.down|\.lora_A)\.weight$")


pytestmark = pytest.mark.usefixtures("one_thread")


def _plain() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(PLAIN)


def _kohya(alpha: Any) -> dict[str, torch.Tensor]:
    """Return the fixture LoRA in kohya-ss naming, with ``alpha(module)`` as each module's .alpha tensor."""
    converted = {}
    for name, tensor in _plain().items():
        module, kind = re.match(r"unet\.(.+)\.(lora\.down|lora\.up|lora_A|lora_B)\.weight$", name).groups()  # type: ignore[union-attr]
        prefix = "lora_unet_" + module.replace(".", "_")
        converted[f"{prefix}.lora_{'down' if kind in ('lora.down', 'lora_A') else 'up'}.weight"] = tensor
        converted[f"{prefix}.alpha"] = torch.tensor(float(alpha(prefix)))
    return converted


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, path, metadata=metadata)
    return path


def _unet_output(lora: Path | None, scale: float = 1.0) -> torch.Tensor:
    """Return the UNet's prediction on a fixed latent, timestep and text condition, with the LoRA at ``scale``."""
    target = load_target(read_model_info(SD / "model", lora=lora, lora_scale=scale), allow_pickle=False, device="cpu", dtype="float32")
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    _, cond = target.encode(torch.zeros(2, 3, 32, 32), ["a red square at the left on white", "a blue disc at the top on black"])
    return target.predict_noise(latents, 100, cond)


@pytest.fixture(scope="module")
def outputs() -> dict[str, torch.Tensor]:
    """Return the base UNet's output and the plain LoRA's at scales 1 and 0.5."""
    return {"base": _unet_output(None), "full": _unet_output(PLAIN, 1.0), "half": _unet_output(PLAIN, 0.5)}


def test_an_alpha_below_the_rank_scales_the_lora_effect_as_declared(tmp_path: Path, outputs: dict[str, torch.Tensor]) -> None:
    kohya = _save(_kohya(lambda _: RANK / 2), tmp_path / "kohya.safetensors")  # alpha 4 / rank 8: half strength
    measured = _unet_output(kohya, 1.0)
    # the same scaling (0.5) on the same weights: the same computation
    assert torch.allclose(measured, outputs["half"], rtol=0, atol=1e-6)
    assert not torch.allclose(measured, outputs["full"], rtol=0, atol=1e-3)
    # and through lora_scale: alpha / rank x scale = 0.5 x 2 = 1, the plain LoRA at full strength
    assert torch.allclose(_unet_output(kohya, 2.0), outputs["full"], rtol=0, atol=1e-6)
    effect = (measured - outputs["base"]).norm() / (outputs["full"] - outputs["base"]).norm()
    assert 0.3 < float(effect) < 0.7  # about half the effect (the UNet is not linear in the LoRA)


def test_metadata_alphas_with_a_per_module_pattern_are_applied(tmp_path: Path) -> None:
    peft_named = {name.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B."): t for name, t in _plain().items()}
    modules = sorted({DOWN.match(name)["module"].removeprefix("unet.") for name in peft_named if DOWN.match(name)})  # type: ignore[index]
    metadata = {"unet.r": RANK, "unet.lora_alpha": RANK / 2, "unet.target_modules": modules, "unet.alpha_pattern": {modules[0]: RANK}}
    file = _save(peft_named, tmp_path / "meta.safetensors", {"format": "pt", "lora_adapter_metadata": json.dumps(metadata)})
    # the same LoRA with alpha / rank folded into the up weights: 1 for the first module, 0.5 elsewhere
    folded = {name: t * (1.0 if name.startswith(f"unet.{modules[0]}.") else 0.5) if ".lora_B." in name else t for name, t in peft_named.items()}
    assert torch.allclose(_unet_output(file), _unet_output(_save(folded, tmp_path / "folded.safetensors")), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ignored", ["kohya .alpha tensors", "lora_adapter_metadata"])
def test_an_alpha_the_loader_ignores_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ignored: str) -> None:
    """A diffusers / peft version that drops the file's alpha would audit the LoRA at another strength."""
    import diffusers.loaders.lora_base as lora_base
    import diffusers.loaders.lora_pipeline as lora_pipeline

    if ignored == "kohya .alpha tensors":
        file = _save(_kohya(lambda _: RANK / 2), tmp_path / "kohya.safetensors")
        convert = lora_pipeline._convert_non_diffusers_lora_to_diffusers
        monkeypatch.setattr(lora_pipeline, "_convert_non_diffusers_lora_to_diffusers", lambda state: (convert(state)[0], {}))
    else:
        peft_named = {name.replace(".lora.down.", ".lora_A.").replace(".lora.up.", ".lora_B."): t for name, t in _plain().items()}
        modules = sorted({DOWN.match(name)["module"].removeprefix("unet.") for name in peft_named if DOWN.match(name)})  # type: ignore[index]
        metadata = {"unet.r": RANK, "unet.lora_alpha": RANK / 2, "unet.target_modules": modules}
        file = _save(peft_named, tmp_path / "meta.safetensors", {"format": "pt", "lora_adapter_metadata": json.dumps(metadata)})
        monkeypatch.setattr(lora_base, "_load_sft_state_dict_metadata", lambda _: None)
    with pytest.raises(TargetError, match=r"does not have the strength the file declares.*alpha 4 / rank 8 x lora_scale 1 = 0\.5.*applies 1\b"):
        _unet_output(file)


def test_per_module_kohya_alphas_are_applied_or_refused(tmp_path: Path) -> None:
    """diffusers 0.42 / peft 0.21 drop kohya per-module alphas (a RuntimeWarning only): refused, or, where a
    version applies them, the UNet matches the same LoRA with each alpha / rank folded into its up weight."""
    kohya = _kohya(lambda prefix: RANK / 4 if prefix.endswith("to_q") else RANK / 2)
    file = _save(kohya, tmp_path / "kohya.safetensors")
    try:
        measured = _unet_output(file)
    except TargetError as exc:
        assert re.search(r"lora_unet_\w+_to_q: the file declares alpha 2 / rank 8 x lora_scale 1 = 0\.25 \(alpha from \.alpha tensor\), the loaded layer applies 0\.5", str(exc)), exc
        assert "8 of 48 modules" in str(exc)
    else:
        folded = {}
        for name, tensor in kohya.items():
            if name.endswith(".lora_up.weight"):
                folded[name] = tensor * (kohya[name.replace(".lora_up.weight", ".alpha")] / RANK)
            elif name.endswith(".lora_down.weight"):
                folded[name] = tensor
        assert torch.allclose(measured, _unet_output(_save(folded, tmp_path / "folded.safetensors")), rtol=0, atol=1e-5)


def test_an_alpha_tensor_without_its_module_is_an_error(tmp_path: Path) -> None:
    kohya = _kohya(lambda _: RANK)
    kohya["lora_unet_nowhere.alpha"] = torch.tensor(1.0)
    with pytest.raises(TargetError, match=r"lora_unet_nowhere\.alpha belong to no lora_down"):
        _unet_output(_save(kohya, tmp_path / "stray.safetensors"))
