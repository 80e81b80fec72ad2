"""Shared test helpers: tiny random diffusers models and generated sample sets, made in tmp_path."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

# One intra-op thread (set before torch loads; inherited by subprocesses): the tiny test models
# gain nothing from more, and on a shared machine OpenMP threads that spin-wait for each other
# made forward passes 5-50x slower (measured on 2 busy cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Score-cache entries are sealed under a secret (naa_guard/scoring/cachesecret.py): the suite's own
# (inherited by subprocesses), so that no test writes a key file into the user's config folder.
os.environ.setdefault("NAA_GUARD_CACHE_KEY", "naa-guard-test-suite-cache-secret")

FIXTURES = Path(__file__).parent / "fixtures"
OVERFIT = FIXTURES / "overfit_digits"


def make_tiny_model(folder: Path, *, sample_size: int = 8, channels: int = 1, prediction_type: str = "epsilon", seed: int = 0, index: bool = True) -> Path:
    """Save a tiny random UNet2DModel + DDPMScheduler as a diffusers folder and return it."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    if index:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder, safe_serialization=True)
    else:
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        scheduler.save_pretrained(folder / "scheduler")
    return folder


def make_images(path: Path, n: int, *, size: int = 8, seed: int = 0, channels: int | None = None) -> Path:
    """Write ``n`` random uint8 images (``N, H, W`` or ``N, H, W, C``) to an .npz and return its path."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    np.savez(path, images=rng.integers(0, 256, size=shape, dtype=np.uint8))
    return path


def edit_json(path: Path, **changes: object) -> None:
    """Update keys of a JSON config file in place (e.g. a model's unet/config.json)."""
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def write_policy(path: Path, body: str) -> Path:
    """Write a dedented policy YAML and return its path."""
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def make_tiny_setup(
    root: Path, *, attacks: str = "{naa: {}}", thresholds: str = "{auc: 0.99, tpr_at_1pct_fpr: null}",
    batch_size: int = 8, members: int = 24, nonmembers: int = 24, extra: str = "", name: str = "tiny",
) -> Path:  # fmt: skip
    """Write a tiny random model, two random image sets and a policy over them; return the policy.

    ``attacks`` and ``thresholds`` are YAML flow mappings; ``extra`` adds top-level YAML lines.
    """
    make_tiny_model(root / "model")
    make_images(root / "members.npz", members, seed=1)
    make_images(root / "nonmembers.npz", nonmembers, seed=2)
    body = (
        f"version: 1\nname: {name}\nmodel: {{path: ./model}}\n"
        "data: {members: ./members.npz, nonmembers: ./nonmembers.npz}\n"
        f"attacks: {attacks}\n"
        f"thresholds: {thresholds}\n"
        f"runtime: {{device: cpu, batch_size: {batch_size}, seed: 0}}\n"
    )
    return write_policy(root / f"{name}.naa.yaml", body + extra)


@pytest.fixture
def tiny_setup(tmp_path: Path) -> Path:
    """Return a policy over a tiny random model and two random 24-image sets."""
    return make_tiny_setup(tmp_path)


@pytest.fixture(scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Run a module's tiny models on one torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Under xdist on two shared cores, two torch threads per worker made each tiny-UNet step about
    10x slower (measured); one keeps it cheap.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd_target(one_thread):  # type: ignore[no-untyped-def]
    """Return the committed tiny Stable Diffusion pipeline (tests/fixtures/tiny_sd), loaded and probed once per module, on one thread."""
    from naa_guard.targets import load_target, probe_target, read_model_info

    target = load_target(read_model_info(FIXTURES / "tiny_sd" / "model"), allow_pickle=False, device="cpu", dtype="float32")
    probe_target(target, "tiny_sd")
    return target
