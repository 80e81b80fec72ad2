"""The zero-configuration demo: a small pixel DDPM that memorises scikit-learn's digits.

``naa-guard demo`` trains a tiny UNet on a seeded subset of the 8x8 digits bundled with
scikit-learn (the members), keeps the rest as held-out non-members, saves everything as a
diffusers folder plus two ``.npz`` sets and a policy, and audits it. The model is trained long
enough on few images to overfit, so the audit shows a clear leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEMO_MEMBERS = 100
DEMO_STEPS = 400
DEMO_SEED = 0

DEMO_POLICY = """\
# naa-guard demo policy (written by `naa-guard demo`). Audit it with `naa-guard audit <this file>`
# or `pytest <this file>`; a gate fails when its metric is above its limit.
version: 1
name: demo
model:
  path: {model}
data:
  members: {members}
  nonmembers: {nonmembers}
attacks:
  # On this small 8x8 model the strongest NAA setting is a low timestep with scaled noise
  # (SPEC section 1); the paper's t=80 default is weaker here.
  naa: {{t: 40, stride: 10, queries: 5, noise: scaled, sigma: 0.1, metric: l2}}
thresholds:
  # A gate passes only when the upper end of its 95% interval is within the limit (decision:
  # upper_ci, the default). 100 members / 1697 non-members can certify these limits: a model that
  # does not leak has an expected upper bound of 0.582 (AUC) and 0.035 (TPR@1%FPR).
  auc: 0.60
  tpr_at_1pct_fpr: 0.05
  decision: upper_ci
runtime: {{device: auto, batch_size: 256, seed: 0}}
"""


def demo_policy_text(folder: str) -> str:
    """Return the demo policy with paths into ``folder`` (relative to where the policy lies)."""
    return DEMO_POLICY.format(model=f"{folder}/model", members=f"{folder}/members.npz", nonmembers=f"{folder}/nonmembers.npz")


@dataclass(frozen=True)
class DemoArtifacts:
    """Where the demo wrote its files."""

    root: Path
    model: Path
    members: Path
    nonmembers: Path
    policy: Path


def digits_split(n_members: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (members, non-members) as uint8 ``N, 8, 8`` images from scikit-learn's digits."""
    from sklearn.datasets import load_digits

    images = np.round(load_digits().images / 16.0 * 255.0).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    return images[np.sort(order[:n_members])], images[np.sort(order[n_members:])]


def train_ddpm(images: np.ndarray, *, steps: int, seed: int, batch_size: int = 64, lr: float = 3e-3, channels: tuple[int, ...] = (16, 32), low_t: int | None = 100, progress: bool = True):  # type: ignore[no-untyped-def]
    """Return a ``(UNet2DModel, DDPMScheduler)`` pair trained on uint8 ``N, H, W`` images.

    With ``low_t``, half of each batch draws its timestep below ``low_t`` (the rest over the whole
    schedule), so the low-noise region that the demo policy's NAA setting probes is learnt sooner.
    Trains on one CPU thread: the model is so small that a second thread only adds OpenMP overhead,
    and on busy cores spinning threads made it several times slower (benchmarks/RESULTS.md).
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]
    unet = UNet2DModel(
        sample_size=images.shape[1], in_channels=1, out_channels=1, block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownBlock2D",) * len(channels), up_block_types=("UpBlock2D",) * len(channels), norm_num_groups=8,
    )  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    alphas_cumprod = scheduler.alphas_cumprod
    optimiser = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    unet.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(unet, optimiser, x, alphas_cumprod, generator, steps=steps, batch_size=batch_size, low_t=low_t, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return unet.eval(), scheduler


def _train(unet, optimiser, x, alphas_cumprod, generator, *, steps: int, batch_size: int, low_t: int | None, progress: bool) -> None:  # type: ignore[no-untyped-def]
    import torch
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="training demo DDPM", unit="step", disable=not progress, leave=False):
        rows = torch.randint(0, len(x), (batch_size,), generator=generator)
        timesteps = torch.randint(0, len(alphas_cumprod), (batch_size,), generator=generator)
        if low_t is not None:
            timesteps[: batch_size // 2] = torch.randint(0, low_t, (batch_size // 2,), generator=generator)
        noise = torch.randn(x[rows].shape, generator=generator)
        abar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * x[rows] + (1 - abar).sqrt() * noise
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps).sample, noise)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def build_demo(out: Path, *, n_members: int = DEMO_MEMBERS, steps: int = DEMO_STEPS, seed: int = DEMO_SEED, progress: bool = True) -> DemoArtifacts:
    """Train the demo model and write model, sample sets and policy under ``out``."""
    from diffusers import DDPMPipeline

    out = Path(out).resolve()
    members, nonmembers = digits_split(n_members, seed)
    unet, scheduler = train_ddpm(members, steps=steps, seed=seed, progress=progress)
    artifacts = DemoArtifacts(out, out / "model", out / "members.npz", out / "nonmembers.npz", out / "demo.naa.yaml")
    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(artifacts.model, safe_serialization=True)
    np.savez_compressed(artifacts.members, images=members)
    np.savez_compressed(artifacts.nonmembers, images=nonmembers)
    artifacts.policy.write_text(
        demo_policy_text("."),
        encoding="utf-8",
    )
    return artifacts
