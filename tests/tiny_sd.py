"""Tiny Stable Diffusion / SDXL pipelines and captioned image sets, built offline (no download).

Used by tests (random pipelines in ``tmp_path``) and by ``tests/fixtures/make_tiny_sd.py`` (the
committed pipeline trained to memorise its members). Images are 32x32 RGB: the VAE halves twice
(scale factor 4) to 4x8x8 latents, the UNet's ``sample_size`` is 8.
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SIZE = 32
LATENT_SIZE = 8
MAX_TOKENS = 24
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40), "purple": (150, 50, 170), "orange": (240, 140, 30)}
BACKGROUNDS = {"white": (235, 235, 235), "black": (20, 20, 20), "grey": (128, 128, 128), "teal": (30, 120, 120)}
SHAPES = ("square", "disc", "bar")
PLACES = ("left", "right", "top", "bottom", "centre")


def _byte_characters() -> list[str]:
    """Return the 256 printable stand-ins of byte-level BPE (GPT-2 / CLIP), in byte order of their table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def make_tokenizer(folder: Path) -> int:
    """Save a character-level CLIPTokenizer (no merges) into ``folder``; return its vocabulary size."""
    from transformers import CLIPTokenizer

    characters = _byte_characters()
    vocab = {token: i for i, token in enumerate(characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"])}
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(scratch) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(Path(scratch) / "vocab.json"), str(Path(scratch) / "merges.txt"), model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return len(vocab)


def text_encoder(vocab_size: int, *, hidden: int = 32, projection: bool = False, seed: int = 0):  # type: ignore[no-untyped-def]
    """Return a small random CLIP text encoder (with a projection head for SDXL's second encoder)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS, projection_dim=hidden, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def make_tiny_sd(folder: Path, *, sdxl: bool = False, prediction_type: str = "epsilon", seed: int = 0, scaling_factor: float = 1.0):  # type: ignore[no-untyped-def]
    """Save a tiny random SD (or SDXL) pipeline into ``folder``; return the pipeline object."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=IMAGE_SIZE, scaling_factor=scaling_factor,
    )  # fmt: skip
    extra = {"addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 32 + 6 * 4} if sdxl else {}
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64 if sdxl else 32, attention_head_dim=8, **extra,
    )  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type)
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = make_tokenizer(Path(scratch) / "tokenizer")
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(Path(scratch) / "tokenizer")
    if sdxl:
        pipeline = StableDiffusionXLPipeline(
            vae=vae, text_encoder=text_encoder(vocab_size, seed=seed + 1), text_encoder_2=text_encoder(vocab_size, projection=True, seed=seed + 2),
            tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, add_watermarker=False,
        )  # fmt: skip
    else:
        pipeline = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder(vocab_size, seed=seed + 1), tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    pipeline.save_pretrained(folder, safe_serialization=True)
    return pipeline


def draw(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Return one random 32x32 RGB scene (a coloured shape on a background, with texture) and its caption."""
    colour, background = rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS))
    shape, place = rng.choice(SHAPES), rng.choice(PLACES)
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float64)
    image[:] = BACKGROUNDS[background]
    centre = {"left": (16, 8), "right": (16, 24), "top": (8, 16), "bottom": (24, 16), "centre": (16, 16)}[place]
    cy, cx = (np.array(centre) + rng.integers(-3, 4, size=2)).tolist()
    half = int(rng.integers(4, 8))
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    if shape == "square":
        mask = (abs(yy - cy) <= half) & (abs(xx - cx) <= half)
    elif shape == "disc":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= half**2
    else:
        mask = (abs(yy - cy) <= half // 2) & (abs(xx - cx) <= half + 3)
    image[mask] = COLOURS[colour]
    image += rng.normal(0, 12, size=image.shape)  # texture: every image is its own
    return np.clip(image, 0, 255).astype(np.uint8), f"a {colour} {shape} at the {place} on {background}"


def write_set(folder: Path, name: str, count: int, seed: int) -> Path:
    """Write ``count`` captioned images under ``folder/name/`` and a ``name.csv`` manifest; return the manifest."""
    rng = np.random.default_rng(seed)
    (folder / name).mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{name}.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for i in range(count):
            pixels, caption = draw(rng)
            Image.fromarray(pixels).save(folder / name / f"{i:03d}.png")
            writer.writerow([f"{name}/{i:03d}.png", caption])
    return manifest


def read_set(manifest: Path) -> tuple[np.ndarray, list[str]]:
    """Return a manifest's images as float32 (N, 3, 32, 32) in [-1, 1] and its captions."""
    with manifest.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    images = np.stack([np.asarray(Image.open(manifest.parent / row["path"]).convert("RGB")) for row in rows]).astype(np.float32)
    return images.transpose(0, 3, 1, 2) / 127.5 - 1.0, [row["caption"] for row in rows]
