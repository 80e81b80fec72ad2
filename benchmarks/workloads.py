"""Generated benchmark workloads: a random UNet folder, image folders and a policy over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_model(folder: Path, *, size: int, channels: int, width: int = 8) -> Path:
    """Save a random UNet2DModel (blocks width, 2*width) + DDPMScheduler as a diffusers folder."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(width, 2 * width), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder, safe_serialization=True)
    return folder


def make_png_folder(folder: Path, count: int, *, size: int, channels: int, seed: int) -> Path:
    """Write ``count`` random PNG images (from one distribution) into ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def make_workload(root: Path, per_side: int, *, size: int = 32, channels: int = 3, width: int = 8, attacks: str = "{loss: {}}", batch_size: int = 64) -> Path:
    """Write a model, member and non-member PNG folders of ``per_side`` images and a policy; return the policy."""
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "model").exists():
        make_model(root / "model", size=size, channels=channels, width=width)
    for role, seed in (("members", 1), ("nonmembers", 2)):
        if not (root / role).exists():
            make_png_folder(root / role, per_side, size=size, channels=channels, seed=seed)
    policy = root / "bench.naa.yaml"
    policy.write_text(
        "version: 1\nname: bench\nmodel: {path: ./model}\ndata: {members: ./members, nonmembers: ./nonmembers}\n"
        f"attacks: {attacks}\nthresholds: {{auc: 0.99, tpr_at_1pct_fpr: null}}\n"
        f"runtime: {{device: cpu, batch_size: {batch_size}, seed: 0}}\n",
        encoding="utf-8",
    )
    return policy


TINY_SD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_sd" / "model"


def make_captioned_folder(folder: Path, count: int, *, size: int, seed: int) -> Path:
    """Write ``count`` random RGB PNGs and a metadata.jsonl giving each its own caption (an imagefolder)."""
    import json

    make_png_folder(folder, count, size=size, channels=3, seed=seed)
    words = ("red", "green", "blue", "square", "disc", "bar", "left", "right", "top", "white", "black", "grey")
    rng = np.random.default_rng(seed + 100)
    lines = [json.dumps({"file_name": f"{i:06d}.png", "text": " ".join(rng.choice(words, 4)) + f" {i}"}) for i in range(count)]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def make_latent_workload(root: Path, per_side: int, *, attacks: str = "{loss: {}}", batch_size: int = 64) -> Path:
    """Write captioned member and non-member folders for the committed tiny SD pipeline, and a policy; return the policy."""
    root.mkdir(parents=True, exist_ok=True)
    for role, seed in (("members", 1), ("nonmembers", 2)):
        if not (root / role).exists():
            make_captioned_folder(root / role, per_side, size=32, seed=seed)
    policy = root / "bench.naa.yaml"
    policy.write_text(
        f"version: 1\nname: bench-latent\nmodel: {{path: {TINY_SD}}}\ndata: {{members: ./members, nonmembers: ./nonmembers}}\n"
        f"attacks: {attacks}\nthresholds: {{auc: 0.99, tpr_at_1pct_fpr: null}}\n"
        f"runtime: {{device: cpu, batch_size: {batch_size}, seed: 0}}\n",
        encoding="utf-8",
    )
    return policy
