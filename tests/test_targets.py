"""Targets: diffusers folder layouts, dtypes, prediction types, safe loading and devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model
from naa_guard.errors import EnvironmentUnavailableError, TargetError
from naa_guard.targets import load_target, read_model_info, resolve_device


def _load(folder: Path, **kwargs):
    options = {"allow_pickle": False, "device": "cpu", "dtype": "float32", **kwargs}
    return load_target(read_model_info(folder), **options)


def test_pipeline_folder_and_bare_subfolders_load_the_same_model(tmp_path: Path) -> None:
    with_index = _load(make_tiny_model(tmp_path / "pipeline", seed=3))
    bare = _load(make_tiny_model(tmp_path / "bare", seed=3, index=False))
    assert not (tmp_path / "bare" / "model_index.json").exists()
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(with_index.predict_noise(x, 10), bare.predict_noise(x, 10))
    assert with_index.sample_size == 8 and with_index.in_channels == 1
    assert with_index.alphas_cumprod.dtype == torch.float32 and len(with_index.alphas_cumprod) == 1000


def test_fp16_weights_run_in_the_runtime_dtype(tmp_path: Path) -> None:
    from diffusers import UNet2DModel

    folder = make_tiny_model(tmp_path / "m")
    UNet2DModel.from_pretrained(folder / "unet").half().save_pretrained(folder / "unet", safe_serialization=True)
    target = _load(folder, dtype="float32")
    assert next(target.unet.parameters()).dtype == torch.float32
    assert target.predict_noise(torch.randn(1, 1, 8, 8), 5).dtype == torch.float32


def test_v_prediction_is_converted_to_epsilon(tmp_path: Path) -> None:
    eps_target = _load(make_tiny_model(tmp_path / "eps", seed=1))
    v_target = _load(make_tiny_model(tmp_path / "v", seed=1, prediction_type="v_prediction"))
    x, t = torch.randn(3, 1, 8, 8), 300
    raw = eps_target.predict_noise(x, t)  # the same network: its raw output, read as v
    abar = eps_target.alphas_cumprod[t]
    torch.testing.assert_close(v_target.predict_noise(x, t), abar.sqrt() * raw + (1 - abar).sqrt() * x)


def test_unsupported_prediction_type_is_refused(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m", prediction_type="sample")
    with pytest.raises(TargetError, match="prediction_type 'sample' is not supported; expected one of epsilon, v_prediction"):
        _load(folder)


def test_pickle_weights_are_refused_unless_allowed(tmp_path: Path) -> None:
    from diffusers import UNet2DModel

    folder = make_tiny_model(tmp_path / "m")
    unet = UNet2DModel.from_pretrained(folder / "unet")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    with pytest.raises(TargetError, match=r"only pickle weights found \(diffusion_pytorch_model.bin\).*allow_pickle: true"):
        _load(folder)
    assert _load(folder, allow_pickle=True).predict_noise(torch.randn(1, 1, 8, 8), 3).shape == (1, 1, 8, 8)


def test_missing_scheduler_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    for file in (folder / "scheduler").iterdir():
        file.unlink()
    (folder / "scheduler").rmdir()
    with pytest.raises(TargetError, match=r"missing subfolder scheduler/ \(found: unet\).*save_pretrained"):
        read_model_info(folder)


def test_latent_pipelines_are_refused_clearly(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(TargetError, match="latent diffusion pipeline"):
        read_model_info(folder)


def test_unet_subfolder_selects_other_weights(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    make_tiny_model(tmp_path / "other", seed=9, index=False)
    (tmp_path / "other" / "unet").rename(folder / "unet_ema")
    info = read_model_info(folder, "unet_ema")
    assert info.unet_dir == folder / "unet_ema"
    with pytest.raises(TargetError, match=r"missing subfolder unet_x/.*model.unet_subfolder"):
        read_model_info(folder, "unet_x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(EnvironmentUnavailableError, match="no CUDA device.*device: auto"):
        resolve_device("cuda")


def test_auto_device_falls_back_in_order() -> None:
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto").type == expected
