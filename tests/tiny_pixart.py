"""Tiny random PixArt-Sigma / PixArt-Alpha pipelines (a tiny T5, a learned-sigma DiT), built offline into a folder.

Images are 32x32 RGB: the VAE halves twice (scale factor 4) to 4x8x8 latents; the transformer has
patch size 2, ``sample_size`` 8 and ``out_channels`` 8 (noise and learned variance, as PixArt's).
"""

from __future__ import annotations

from pathlib import Path

from tiny_flow import t5_parts
from tiny_sd import LATENT_SIZE


def make_tiny_pixart(folder: Path, *, seed: int = 0, alpha: bool = False, learned_sigma: bool = True, prediction_type: str = "epsilon", sample_size: int = LATENT_SIZE, beta_end: float = 0.02):  # type: ignore[no-untyped-def]
    """Save a tiny random PixArt-Sigma (or Alpha) pipeline into ``folder``; return the pipeline."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32, scaling_factor=0.13025,
    )  # fmt: skip
    transformer = PixArtTransformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=4, out_channels=8 if learned_sigma else 4, num_layers=1, attention_head_dim=8 if sample_size != 128 else 12,
        num_attention_heads=2, cross_attention_dim=16 if sample_size != 128 else 24, caption_channels=80, norm_type="ada_norm_single", norm_elementwise_affine=False,
        norm_eps=1e-6, use_additional_conditions=sample_size == 128,
    )  # fmt: skip  # with the size conditions, the width is 3 x 8: a third each for resolution, aspect ratio and time
    encoder, tokenizer = t5_parts(seed + 3)
    tokenizer.model_max_length = 300
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=beta_end, beta_schedule="linear", prediction_type=prediction_type)
    kind = PixArtAlphaPipeline if alpha else PixArtSigmaPipeline
    pipeline = kind(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer, scheduler=scheduler)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline
