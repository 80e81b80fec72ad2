"""Model checks: configs of the wrong type or range, impossible noise schedules, unknown classes,
missing / unexpected / corrupt weights are errors that name the file and the key, never a model
that loads half-initialised and audits (issue 8, class 3)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import edit_json, make_tiny_model

from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.modelcheck import check_alphas_cumprod, read_safetensors_header

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("pristine") / "model")


@pytest.fixture
def model(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "model"))


def _load(folder: Path) -> Any:
    return load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")


@pytest.mark.parametrize("content", ["[1, 2]", "null", '"unet"'])
@pytest.mark.parametrize("config", ["unet/config.json", "scheduler/scheduler_config.json", "model_index.json"])
def test_a_json_config_that_is_not_an_object_is_named(model: Path, config: str, content: str) -> None:
    (model / config).write_text(content)
    with pytest.raises(TargetError, match=rf"{config.split('/')[-1]}: expected a JSON object"):
        read_model_info(model)


@pytest.mark.parametrize(("key", "value", "words"), [
    ("in_channels", True, "in_channels is True"),
    ("layers_per_block", "1", "layers_per_block is '1'"),
    ("block_out_channels", [8, -16], "block_out_channels is [8, -16]"),
    ("sample_size", 8.0, "sample_size is 8.0"),
])  # fmt: skip
def test_unet_config_values_of_the_wrong_type_or_range_are_errors(model: Path, key: str, value: Any, words: str) -> None:
    edit_json(model / "unet/config.json", **{key: value})
    with pytest.raises(TargetError, match="config.json") as caught:
        _load(model)
    assert words in str(caught.value)


@pytest.mark.parametrize(("changes", "words"), [
    ({"beta_end": 1.5}, "beta_end is 1.5; expected a number in (0, 1)"),
    ({"beta_start": 0.0}, "beta_start is 0.0"),
    ({"trained_betas": [0.1, 2.0]}, "trained_betas must be a list"),
    ({"num_train_timesteps": "1000"}, "num_train_timesteps is '1000'"),
    ({"beta_schedule": "cubic"}, "beta_schedule is 'cubic'"),
])  # fmt: skip
def test_impossible_noise_schedules_are_refused_before_loading(model: Path, changes: dict[str, Any], words: str) -> None:
    edit_json(model / "scheduler/scheduler_config.json", **changes)
    with pytest.raises(TargetError, match="scheduler_config.json") as caught:
        read_model_info(model)
    assert words in str(caught.value)


@pytest.mark.parametrize(("alphas", "words"), [
    ([0.9, 0.5, 0.0], "leaves (0, 1]"),
    ([0.9, 0.9, 0.5], "not strictly decreasing"),
    ([0.9, float("nan")], "NaN"),
    ([1.2, 0.5], "leaves (0, 1]"),
])  # fmt: skip
def test_alphas_cumprod_must_be_in_0_1_and_decreasing(alphas: list[float], words: str) -> None:
    with pytest.raises(TargetError, match="alphas_cumprod") as caught:
        check_alphas_cumprod(alphas, "here")
    assert words in str(caught.value)
    check_alphas_cumprod([1.0, 0.5, 0.1], "here")  # a valid schedule passes


def test_model_index_naming_a_class_that_does_not_exist_is_an_error(model: Path) -> None:
    edit_json(model / "model_index.json", unet=["diffusers", "UNet9000Model"])
    with pytest.raises(TargetError, match=r"model_index.json: component 'unet' names the class diffusers.UNet9000Model, which does not exist"):
        _load(model)


def test_model_index_disagreeing_with_a_components_own_config_is_an_error(model: Path) -> None:
    edit_json(model / "model_index.json", scheduler=["diffusers", "DDIMScheduler"])
    with pytest.raises(TargetError, match=r"component 'scheduler' is DDIMScheduler here, but scheduler/'s own config says 'DDPMScheduler'"):
        _load(model)


def test_model_index_naming_another_library_is_an_error(model: Path) -> None:
    edit_json(model / "model_index.json", scheduler=["my_package", "MyScheduler"])
    with pytest.raises(TargetError, match="names the library 'my_package'.*model.loader"):
        _load(model)


def _rewrite_weights(model: Path, change: Any) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / WEIGHTS)
    change(tensors)
    save_file(tensors, model / WEIGHTS, metadata={"format": "pt"})


def test_weights_missing_a_tensor_are_an_error_naming_it(model: Path) -> None:
    _rewrite_weights(model, lambda tensors: tensors.pop("conv_out.weight"))
    with pytest.raises(TargetError, match=r"1 tensor\(s\) missing from the weights: conv_out.weight"):
        _load(model)


def test_unexpected_extra_tensors_are_an_error_naming_them(model: Path) -> None:
    import torch

    _rewrite_weights(model, lambda tensors: tensors.update(backdoor=torch.zeros(3)))
    with pytest.raises(TargetError, match=r"unexpected tensor\(s\) the UNet2DModel does not have: backdoor"):
        _load(model)


def test_a_corrupt_safetensors_file_is_named(model: Path) -> None:
    weights = model / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(TargetError, match=r"diffusion_pytorch_model.safetensors: this safetensors weight file is corrupt \(.*truncated"):
        _load(model)
    weights.write_bytes(b"\xff" * 4)
    with pytest.raises(TargetError, match="too short for a header"):
        read_safetensors_header(weights)


def test_an_untouched_model_passes_every_check(model: Path) -> None:
    target = _load(model)
    assert target.sample_size == 8 and target.in_channels == 1


TORCH_ADVICE = ("weights_only", "will likely succeed", "add_safe_globals")


def _pickle_with_an_object(tensors: dict[str, Any], path: Path) -> Path:
    """Save ``tensors`` plus a non-tensor object as a torch pickle (what torch's weights_only loader refuses)."""
    import argparse

    import torch

    torch.save({**tensors, "training_args": argparse.Namespace(lr=1e-4)}, path)
    return path


def _assert_our_pickle_advice(message: str) -> None:
    assert not [words for words in TORCH_ADVICE if words in message], message  # torch's unsafe advice is never passed on
    assert "argparse.Namespace" in message and "even with model.allow_pickle: true" in message and "safetensors" in message


def test_a_pickle_holding_objects_gets_naa_guards_advice_not_torchs(model: Path) -> None:
    from safetensors.torch import load_file

    weights = model / WEIGHTS
    _pickle_with_an_object(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(TargetError) as caught:
        load_target(read_model_info(model), allow_pickle=True, device="cpu", dtype="float32")
    assert "diffusion_pytorch_model.bin" in str(caught.value)
    _assert_our_pickle_advice(str(caught.value))


def test_a_lora_pickle_holding_objects_gets_the_same_advice(tmp_path: Path) -> None:
    from conftest import FIXTURES
    from safetensors.torch import load_file

    sd = FIXTURES / "tiny_sd"
    lora = _pickle_with_an_object(load_file(sd / "lora" / "pytorch_lora_weights.safetensors"), tmp_path / "lora.bin")
    with pytest.raises(TargetError) as caught:  # before: torch's raw UnpicklingError, advice included
        load_target(read_model_info(sd / "model", lora=lora), allow_pickle=True, device="cpu", dtype="float32")
    assert str(caught.value).startswith(f"model.lora {lora}: ")
    _assert_our_pickle_advice(str(caught.value))
