"""A latent audit's memory is bounded by the batch: the VAE never sees more images than a batch, the probe one.

Spies on the VAE's and the UNet's call sizes (never wall time or RSS): the VAE's activations are a
latent audit's largest tensors, so an encoder call over a chunk (or a batch padded to 16) is what
made a Stable Diffusion 1.5-sized audit need 15 GB for 4 GB of weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FIXTURES, write_policy

from naa_guard.audit import audit
from naa_guard.policy import load_policy
from naa_guard.scoring.runner import CHUNK_SAMPLES
from naa_guard.targets import load_target, probe_target, read_model_info
from naa_guard.targets.latent import LatentTarget

SD = FIXTURES / "tiny_sd"
pytestmark = pytest.mark.usefixtures("one_thread")


def fresh_target() -> LatentTarget:
    return load_target(read_model_info(SD / "model"), allow_pickle=False, device="cpu", dtype="float32")  # type: ignore[return-value]


def spy_rows(monkeypatch: pytest.MonkeyPatch, module: Any, method: str) -> list[int]:
    """Record the leading size of the first argument of every call to ``module.method``."""
    rows: list[int] = []
    original = getattr(module, method)

    def spy(sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        rows.append(int(sample.shape[0]))
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(module, method, spy)
    return rows


def test_the_vae_never_encodes_more_images_than_a_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = fresh_target()
    vae_rows = spy_rows(monkeypatch, target.vae, "encode")
    policy = write_policy(
        tmp_path / "mem.naa.yaml",
        f"version: 1\nname: mem\nmodel: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, limit: 20}}\n"
        "attacks: {sima: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}\n"
        "runtime: {device: cpu, batch_size: 4, seed: 0}\n",
    )
    result = audit(load_policy(policy), target=target, progress=False, chunk_samples=CHUNK_SAMPLES)
    assert len(result.attacks["sima"].member_scores) == 20
    # 20 images per side in one chunk of 20, five batches of 4: the whole chunk would be 20 images (32
    # with padding), a padded batch 16; the VAE takes one image per call
    assert sum(vae_rows) == 40
    assert max(vae_rows) <= 4, f"the VAE encoded {max(vae_rows)} images in one call; runtime.batch_size is 4"


def test_latents_encoded_one_by_one_match_a_whole_batch_encoded_at_once() -> None:
    target = fresh_target()
    pixels = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, size=(6, 3, target.sample_size, target.sample_size)).astype(np.float32))
    with torch.inference_mode():
        whole = target.vae.encode(pixels).latent_dist.mean * target.scaling_factor
    assert torch.allclose(target.encode_images(pixels), whole, rtol=1e-4, atol=1e-5)
    # an image's latent does not depend on the other images of its batch
    assert torch.equal(target.encode_images(pixels[2:3])[0], target.encode_images(pixels)[2])


def test_the_probe_costs_one_image_and_one_query_and_reports_its_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    target = fresh_target()
    vae_rows = spy_rows(monkeypatch, target.vae, "encode")
    unet_rows = spy_rows(monkeypatch, target, "unet")
    seconds = probe_target(target, "tiny_sd")
    assert (vae_rows, unet_rows) == ([1], [1])  # unpadded: not the 16 rows of a scoring call
    assert isinstance(seconds, float) and seconds >= 0.0
    assert (target.forward_calls, target.sample_queries, target.encoded_images) == (0, 0, 0)
