"""Targets: folder layouts, dtypes, prediction types, devices, safe loading (no pickle unless
allowed, offline), the geometry probe, and non-finite predictions named by attack and sample."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

from naa_guard.attacks.naa import NAA, NAAParams
from naa_guard.audit import audit
from naa_guard.errors import EnvironmentUnavailableError, NonFiniteScoreError, TargetError
from naa_guard.policy import load_policy
from naa_guard.samples import SampleSet
from naa_guard.scoring.runner import score_samples
from naa_guard.targets import OFFLINE_VARIABLES, DiffusersTarget, load_target, offline_environment, probe_target, read_model_info, resolve_device


def _pickle_model(folder: Path) -> Path:
    """Save a tiny model whose UNet weights are a pickle (.bin) file only."""
    from diffusers import UNet2DModel

    make_tiny_model(folder)
    unet_dir = folder / "unet"
    unet = UNet2DModel.from_pretrained(unet_dir)
    (unet_dir / "diffusion_pytorch_model.safetensors").unlink()
    unet.save_pretrained(unet_dir, safe_serialization=False)
    assert (unet_dir / "diffusion_pytorch_model.bin").is_file()
    return folder


def test_pickle_weights_are_refused_unless_allowed(tiny_setup: Path) -> None:
    model = tiny_setup.parent / "model"
    shutil.rmtree(model)
    _pickle_model(model)
    with pytest.raises(TargetError, match=r"only pickle weights found \(diffusion_pytorch_model\.bin\).*allow_pickle: true"):
        audit(load_policy(tiny_setup), progress=False)
    tiny_setup.write_text(tiny_setup.read_text().replace("model: {path: ./model}", "model: {path: ./model, allow_pickle: true}"))
    result = audit(load_policy(tiny_setup), progress=False)
    assert result.model_loaded and np.isfinite(result.attacks["naa"].member_scores).all()


def test_nothing_reaches_the_network_during_an_audit(tiny_setup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every outgoing connection raises: the audit must still complete."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any, *args: Any) -> None:
        attempts.append(address)
        raise OSError(f"test: network access to {address} is forbidden during an audit")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    result = audit(load_policy(tiny_setup), progress=False)
    assert result.model_loaded and attempts == []


def test_offline_environment_is_set_while_loading_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with offline_environment():
        assert all(os.environ[name] == value for name, value in OFFLINE_VARIABLES.items())
    assert os.environ["HF_HUB_OFFLINE"] == "0" and "TRANSFORMERS_OFFLINE" not in os.environ


class _FakeUNet:
    """A stand-in UNet: returns x, with NaN for every sample whose first pixel is above 0.5."""

    def __init__(self, out_channels: int = 1) -> None:
        import torch

        self.config = SimpleNamespace(sample_size=8, in_channels=1)
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out_channels = out_channels

    def parameters(self) -> Any:
        return iter([self.weight])

    def to(self, **_: Any) -> _FakeUNet:
        return self

    def eval(self) -> _FakeUNet:
        return self

    def __call__(self, x: Any, timesteps: Any) -> SimpleNamespace:
        out = x.repeat(1, self.out_channels, 1, 1).clone()
        out[x[:, 0, 0, 0] > 0.5] = float("nan")
        return SimpleNamespace(sample=out)


def _target(out_channels: int = 1) -> DiffusersTarget:
    import torch
    from diffusers import DDPMScheduler

    return DiffusersTarget(_FakeUNet(out_channels), DDPMScheduler().alphas_cumprod, "epsilon", torch.device("cpu"), torch.float32)


def test_non_finite_predictions_name_the_attack_and_the_samples() -> None:
    images = np.zeros((6, 1, 8, 8), dtype=np.float32)
    images[[2, 4], 0, 0, 0] = 1.0  # two samples the model returns NaN for
    samples = SampleSet.from_images(images, tuple(f"digits.npz[{i}]" for i in range(6)), np.arange(6), (None,) * 6, Path("digits.npz"), ())
    attack = NAA(NAAParams(t=40, queries=3))
    with pytest.raises(NonFiniteScoreError) as caught:
        score_samples(attack, _target(), samples, "nonmembers", batch_size=6, seed=0)
    message = str(caught.value)
    assert message.startswith("attack naa, nonmembers sample(s) digits.npz[2], digits.npz[4]: ")
    assert "NaN or infinite noise predictions at timestep 40" in message and "runtime.dtype: float32" in message


def test_the_probe_rejects_a_prediction_of_the_wrong_shape() -> None:
    """A UNet that also predicts the variance (2 x in_channels outputs) errors before any scoring."""
    with pytest.raises(TargetError, match=r"predicts shape \(1, 2, 8, 8\).*variance"):
        probe_target(_target(out_channels=2), "model/unet")


def test_the_probe_leaves_the_call_counters_alone(tmp_path: Path) -> None:
    target = load_target(read_model_info(make_tiny_model(tmp_path / "m")), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(target, "m/unet")
    assert (target.forward_calls, target.sample_queries) == (0, 0)


def test_the_probe_fails_for_a_sample_size_the_unet_cannot_take(tmp_path: Path) -> None:
    import json

    model = make_tiny_model(tmp_path / "m")
    config_file = model / "unet" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "sample_size": 7}))
    info = read_model_info(model)
    target = load_target(info, allow_pickle=False, device="cpu", dtype="float32")
    with pytest.raises(TargetError, match=r"cannot take images of its declared geometry \(in_channels 1, sample_size 7\)"):
        probe_target(target, str(info.unet_dir))


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


class _VOracle(torch.nn.Module):
    """A stand-in network that outputs a fixed v for the first rows of any (padded) batch."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = v
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # DiffusersTarget reads the dtype from a parameter
        self.config = SimpleNamespace(sample_size=v.shape[-1], in_channels=v.shape[1])

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=torch.cat([self.v, x.new_zeros((x.shape[0] - len(self.v), *x.shape[1:]))]))


def test_v_prediction_gives_back_the_noise_it_was_built_from() -> None:
    """v = sqrt(abar) eps - sqrt(1 - abar) x0 for a known x0 and eps; predict_noise must return eps."""
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.float()
    generator = torch.Generator().manual_seed(4)
    x0, noise = torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1, torch.randn(3, 1, 8, 8, generator=generator)
    for t in (10, 300, 900):
        abar = alphas[t]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        v = abar.sqrt() * noise - (1 - abar).sqrt() * x0
        target = DiffusersTarget(_VOracle(v), alphas, "v_prediction", torch.device("cpu"), torch.float32)
        # float32 arithmetic on values of order 1-4: a few ulps (1e-7 each) of error, well below 1e-5.
        torch.testing.assert_close(target.predict_noise(x_t, t), noise, rtol=0, atol=1e-5)


def test_unsupported_prediction_type_is_refused(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m", prediction_type="sample")
    with pytest.raises(TargetError, match="prediction_type 'sample' is not supported; expected one of epsilon, v_prediction"):
        _load(folder)


def test_missing_scheduler_names_the_folder_and_the_fix(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    for file in (folder / "scheduler").iterdir():
        file.unlink()
    (folder / "scheduler").rmdir()
    with pytest.raises(TargetError, match=r"missing subfolder scheduler/ \(found: unet\).*save_pretrained"):
        read_model_info(folder)


def test_a_latent_pipeline_without_its_components_is_refused_clearly(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "m")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(TargetError, match=r"latent text-to-image pipeline is missing vae/, text_encoder/, tokenizer/"):
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
