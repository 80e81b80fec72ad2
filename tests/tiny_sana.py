"""Tiny random Sana pipelines (a tiny Gemma2 encoder, a deterministic DC autoencoder, a linear-attention DiT), built offline.

Images are 32x32 RGB: the DC autoencoder compresses 4x (two stages) to 4x8x8 latents; the
transformer has patch size 1 and ``sample_size`` 8. The scheduler is Sana's own: a
DPMSolverMultistepScheduler with ``prediction_type: flow_prediction`` and flow sigmas.
"""

from __future__ import annotations

from pathlib import Path

from tiny_sd import LATENT_SIZE


def gemma_parts(seed: int, hidden: int = 24):  # type: ignore[no-untyped-def]
    """Return a tiny random Gemma2 encoder and a character-level Gemma tokenizer (BOS added, right padding), built offline."""
    import torch
    from transformers import Gemma2Config, Gemma2Model, GemmaTokenizer

    from naa_guard.targets.sana import COMPLEX_HUMAN_INSTRUCTION

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for code in list(range(32, 127)) + [10]:
        vocab.setdefault(chr(code) if code != 32 else "\u2581", len(vocab))
    merges: list[tuple[str, str]] = []  # whole words of the pipeline's instruction: ~200 tokens, not ~1000 characters
    for word in COMPLEX_HUMAN_INSTRUCTION.replace("\n", " ").split(" "):
        for text in ("\u2581" + word, word):
            for end in range(2, len(text) + 1):
                if text[:end] not in vocab:
                    vocab[text[:end]] = len(vocab)
                    merges.append((text[: end - 1], text[end - 1]))
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)
    torch.manual_seed(seed)
    config = Gemma2Config(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        head_dim=12, max_position_embeddings=2048, pad_token_id=0, bos_token_id=2, eos_token_id=1, sliding_window=64,
    )  # fmt: skip
    return Gemma2Model(config).eval(), tokenizer


def make_tiny_sana(folder: Path, *, seed: int = 0, scheduler: str = "dpm", learned_sigma: bool = False):  # type: ignore[no-untyped-def]
    """Save a tiny random Sana pipeline into ``folder``; return the pipeline."""
    import torch
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaTransformer2DModel

    torch.manual_seed(seed)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=4, encoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8, 16),
        decoder_block_out_channels=(8, 8, 16), encoder_qkv_multiscales=((), (5,), (5,)), decoder_qkv_multiscales=((), (5,), (5,)),
        encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1), downsample_block_type="conv", upsample_block_type="interpolate",
        decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407,
    )  # fmt: skip
    transformer = SanaTransformer2DModel(
        in_channels=4, out_channels=8 if learned_sigma else 4, num_attention_heads=2, attention_head_dim=4, num_layers=1, num_cross_attention_heads=2,
        cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=24, mlp_ratio=2.5, sample_size=LATENT_SIZE, patch_size=1,
    )  # fmt: skip
    encoder, tokenizer = gemma_parts(seed + 3)
    if scheduler == "dpm":
        chosen = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    else:
        chosen = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipeline = SanaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=vae, transformer=transformer, scheduler=chosen)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline
