"""Tiny random Flux 2 [klein] pipelines (Qwen3 text encoder, AutoencoderKLFlux2), built offline into a folder.

Images are 32x32 RGB: the VAE halves twice to 4x8x8 latents, the pipeline patchifies them 2x2 to
16x4x4 and normalises them with the VAE's batch-norm statistics (set here to values far from 0 / 1,
so a test notices when they are skipped). The Qwen3 encoder has 27 layers, the deepest the
pipeline's default ``text_encoder_out_layers`` (9, 18, 27) reads; the transformer takes their
three hidden states side by side (joint_attention_dim 3 x 16).
"""

from __future__ import annotations

from pathlib import Path

# A chat template of the form the Qwen tokenizers carry (system / user turns, an assistant turn opened
# by add_generation_prompt, an empty think block when enable_thinking is false); written for the tests.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def qwen_tokenizer():  # type: ignore[no-untyped-def]
    """Return a byte-level BPE Qwen2TokenizerFast (256 byte tokens and the chat's special tokens), built offline."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    model = Tokenizer(BPE(vocab=vocab, merges=[]))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    model.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=model, unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_flux2_klein(folder: Path, *, seed: int = 0):  # type: ignore[no-untyped-def]
    """Save a tiny random Flux2KleinPipeline into ``folder``; return the pipeline."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32,
    )  # fmt: skip
    with torch.no_grad():  # batch-norm statistics as a trained VAE has them (not the initial 0 / 1)
        vae.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, 16))
        vae.bn.running_var.copy_(torch.linspace(0.2, 3.0, 16))
    tokenizer = qwen_tokenizer()
    encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=24, num_hidden_layers=27, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=1024, tie_word_embeddings=False,
    ))  # fmt: skip
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=48, timestep_guidance_channels=32, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )  # fmt: skip
    pipeline = Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=encoder, tokenizer=tokenizer, transformer=transformer)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline
