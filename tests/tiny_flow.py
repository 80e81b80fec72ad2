"""Tiny random Stable Diffusion 3 pipelines (two CLIP encoders, no T5), built offline into a folder.

Images are 32x32 RGB: the VAE halves twice (scale factor 4) to 4x8x8 latents; the transformer
has patch size 2 and ``sample_size`` 8.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tiny_sd import LATENT_SIZE, make_tokenizer, text_encoder


def t5_parts(seed: int):  # type: ignore[no-untyped-def]
    """Return a tiny random T5 encoder (d_model 80) and a character-level T5 tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import Unigram
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(chr(code), -1.0) for code in range(33, 127)] + [("\u2581", -1.0)]
    model = Tokenizer(Unigram(pieces, unk_id=2))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer = T5TokenizerFast(tokenizer_object=model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0, model_max_length=256)
    torch.manual_seed(seed)
    encoder = T5EncoderModel(T5Config(vocab_size=len(pieces), d_model=80, d_kv=8, d_ff=37, num_layers=1, num_heads=2, relative_attention_num_buckets=8))
    return encoder, tokenizer


def make_tiny_sd3(folder: Path, *, seed: int = 0, shift_factor: float = 0.1, scaling_factor: float = 1.5, t5: bool = False):  # type: ignore[no-untyped-def]
    """Save a tiny random SD3 pipeline (with a tiny T5, or text_encoder_3 None) into ``folder``; return the pipeline."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )  # fmt: skip
    transformer = SD3Transformer2DModel(
        sample_size=LATENT_SIZE, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=80, caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=16,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = make_tokenizer(Path(scratch) / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(Path(scratch) / "tokenizer")
    encoder_3, tokenizer_3 = t5_parts(seed + 3) if t5 else (None, None)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder(vocab_size, projection=True, seed=seed + 1), tokenizer=tokenizer,
        text_encoder_2=text_encoder(vocab_size, projection=True, seed=seed + 2), tokenizer_2=tokenizer,
        text_encoder_3=encoder_3, tokenizer_3=tokenizer_3,
    )  # fmt: skip
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline


def make_tiny_flux(folder: Path, *, seed: int = 0, guidance: bool = True):  # type: ignore[no-untyped-def]
    """Save a tiny random Flux pipeline (CLIP + T5, 16-channel packed latents) into ``folder``; return the pipeline."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32,
        scaling_factor=1.5, shift_factor=0.1,
    )  # fmt: skip
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=80, pooled_projection_dim=32, guidance_embeds=guidance, axes_dims_rope=[2, 2, 4],
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = make_tokenizer(Path(scratch) / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(Path(scratch) / "tokenizer")
    t5, t5_tokenizer = t5_parts(seed + 3)
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder(vocab_size, seed=seed + 1), tokenizer=tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )  # fmt: skip
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline
