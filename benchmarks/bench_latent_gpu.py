"""A latent (Stable Diffusion 1.5-sized) NAA audit's speed against the raw UNet forward ceiling, per dtype.

    python benchmarks/bench_latent_gpu.py [--device cuda] [--dtypes float32,bfloat16] [--n 64] [--batch 32]
                                          [--rounds 2] [--tiny] [--budget-s 240]

Builds, with random weights and nothing downloaded, a pipeline of Stable Diffusion 1.5's shape:
UNet2DConditionModel with SD 1.5's config (860M parameters, 4x64x64 latents, cross-attention 768),
SD 1.5's AutoencoderKL (512x512 images, scaling factor 0.18215) and a 12-layer 768-wide CLIP text
encoder over the character tokenizer of the repo's tiny SD fixture (max length 77); saves it as a
diffusers folder in a temporary directory and loads it the way an audit does
(``naa_guard.scoring.models.load_model``: offline load, dtype check, probe). ``--tiny`` builds the
tiny SD fixture's shape instead (32x32 images), for a check on the CPU.

Members and non-members are ``--n`` random uint8 images each (an .npz per side) under one prompt
(``data.prompt``, DreamBooth style). For each dtype: one cold audit (NAA at its defaults, 5 queries
per sample; the VAE and text encodings are computed in it), then ``--rounds`` rounds of
[raw forward ceiling, warm audit]. The ceiling is ``unet(latents, t, encoder_hidden_states)``
under inference_mode in the same dtype and batch size, over as many sample-queries as the audit
makes, in a tight loop with ``torch.cuda.synchronize`` before and after, no naa-guard code. The
audit's time is the attack's own ``seconds`` (its scoring: decode, encode or encodings reused,
noise, UNet, scores to the host); the whole ``audit()`` call (listing, overlap digests, metrics)
is printed beside it. Ratio = ceiling time / attack time (1.0: no overhead). The script stops
starting rounds once ``--budget-s`` has passed. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "tiny_sd" / "model" / "tokenizer"
PROMPT = "a photo of sks dog"


def build_pipeline(folder: Path, *, tiny: bool, device: str) -> dict[str, Any]:
    """Save a random SD-1.5-shaped (or tiny) pipeline into ``folder``; return its geometry."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    diffusers.logging.set_verbosity_error()
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    vocab = len(tokenizer)
    if tiny:
        image, hidden, layers, heads, tokens = 32, 32, 2, 4, tokenizer.model_max_length
        unet_config: dict[str, Any] = dict(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8,
        )  # fmt: skip
        vae_config: dict[str, Any] = dict(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    else:
        image, hidden, layers, heads, tokens = 512, 768, 12, 12, 77
        unet_config = dict(sample_size=64)  # diffusers' defaults are SD 1.5's UNet but for the cross-attention width
        vae_config = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    tokenizer.model_max_length = tokens
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on the host
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, cross_attention_dim=hidden, **unet_config)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=image, scaling_factor=0.18215, **vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
            max_position_embeddings=tokens, projection_dim=hidden, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        ))  # fmt: skip
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipeline.save_pretrained(folder, safe_serialization=True)
    return {"image": image, "unet_params": sum(p.numel() for p in unet.parameters()), "vae_params": sum(p.numel() for p in vae.parameters()), "text_params": sum(p.numel() for p in text_encoder.parameters()), "tokens": tokens, "hidden": hidden}


def write_sets(folder: Path, n: int, size: int) -> tuple[Path, Path]:
    """Write ``n`` random uint8 RGB images per side as .npz files; return their paths."""
    rng = np.random.default_rng(0)
    paths = []
    for name in ("members", "nonmembers"):
        path = folder / f"{name}.npz"
        np.savez(path, images=rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))
        paths.append(path)
    return paths[0], paths[1]


def make_policy(model: Path, sets: tuple[Path, Path], device: str, dtype: str, batch: int) -> Any:
    from naa_guard.policy import parse_policy

    raw = {
        "version": 1, "name": f"latent-bench-{dtype}",
        "model": {"path": str(model)},
        "data": {"members": str(sets[0]), "nonmembers": str(sets[1]), "prompt": PROMPT, "conditioning": "prompt"},
        "attacks": {"naa": {}},
        "checks": {"shift_auc": None},
        "thresholds": {"auc": 0.99, "tpr_at_1pct_fpr": None, "decision": "point"},
        "runtime": {"device": device, "dtype": dtype, "batch_size": batch, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, model.parent / f"bench-{dtype}.naa.yaml")


def measure(args: argparse.Namespace, dtype_name: str, folder: Path, sets: tuple[Path, Path], geometry: dict[str, Any], started: float) -> tuple[float, float] | None:
    """Print one dtype's cold audit and rounds; return the median (attack, whole audit()) ratios to the ceiling."""
    import torch

    from naa_guard.audit import audit
    from naa_guard.scoring.models import load_model
    from naa_guard.targets import read_model_info, resolve_device

    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    policy = make_policy(folder / "model", sets, args.device, dtype_name, args.batch)
    loading = time.perf_counter()
    target = load_model(policy, read_model_info(folder / "model"))
    print(f"{dtype_name}: loaded in {time.perf_counter() - loading:.1f}s", flush=True)
    dtype = getattr(torch, dtype_name)
    latent = geometry["image"] // 8 if not args.tiny else 8
    x = torch.randn((args.batch, 4, latent, latent), device=device, dtype=dtype)
    text = torch.randn((args.batch, geometry["tokens"], geometry["hidden"]), device=device, dtype=dtype)
    timestep = torch.full((args.batch,), 80, device=device, dtype=torch.long)
    unet = target.unet

    def ceiling(queries: int) -> float:
        """Seconds for ``queries`` sample-queries through the bare UNet, whole batches."""
        calls = -(-queries // args.batch)
        sync()
        begin = time.perf_counter()
        with torch.inference_mode():
            for _ in range(calls):
                unet(x, timestep, encoder_hidden_states=text).sample.float()
        sync()
        return (time.perf_counter() - begin) * queries / (calls * args.batch)

    def run_audit() -> tuple[float, float, int, int]:
        counters = (getattr(target, "encoded_images", 0), getattr(target, "sample_queries", 0))
        sync()
        begin = time.perf_counter()
        result = audit(policy, target=target, progress=False)
        sync()
        wall = time.perf_counter() - begin
        naa = result.attacks["naa"]
        encoded = getattr(target, "encoded_images", 0) - counters[0]
        queries = getattr(target, "sample_queries", 0) - counters[1] or naa.queries_per_sample * 2 * args.n
        return naa.seconds, wall, encoded, queries

    ceiling(args.batch * 3)  # warm-up: kernels chosen, memory allocated
    attack_s, wall_s, encoded, queries = run_audit()
    cold_ceiling = ceiling(queries)
    print(f"{dtype_name} cold: attack {attack_s:.2f}s ({encoded} images VAE-encoded), audit() {wall_s:.2f}s, ceiling {cold_ceiling:.2f}s for {queries} sample-queries; ratio {cold_ceiling / attack_s:.3f}", flush=True)
    ratios: list[float] = []
    walls: list[float] = []
    for number in range(args.rounds):
        if number and time.perf_counter() - started > args.budget_s:
            print(f"{dtype_name}: budget of {args.budget_s:.0f}s spent after {number} round(s)", flush=True)
            break
        reference = ceiling(queries)
        attack_s, wall_s, encoded, _ = run_audit()
        ratios.append(reference / attack_s)
        walls.append(reference / wall_s)
        print(
            f"{dtype_name} round {number + 1}: ceiling {reference:.2f}s ({queries / reference:,.0f} sample-queries/s), attack {attack_s:.2f}s "
            f"({2 * args.n / attack_s:,.1f} samples/s, {encoded} images VAE-encoded), audit() {wall_s:.2f}s; ratio {ratios[-1]:.3f} (whole audit() {walls[-1]:.3f})",
            flush=True,
        )
    return (statistics.median(ratios), statistics.median(walls)) if ratios else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--n", type=int, default=64, help="images per side (at least 20: the gate's minimum)")
    parser.add_argument("--batch", type=int, default=32, help="runtime.batch_size (a multiple of 16 pads nothing)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny SD fixture's shape (for a CPU check)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="start no further round after this many seconds")
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # diffusers' config deprecation notices
    started = time.perf_counter()

    import torch

    from naa_guard.targets import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    where = f"{torch.cuda.get_device_name(device)}" if cuda else f"cpu, {torch.get_num_threads()} threads"
    print(f"device {device} ({where}); torch {torch.__version__}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}", flush=True)
    summary = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        geometry = build_pipeline(folder / "model", tiny=args.tiny, device=str(device))
        sets = write_sets(folder, args.n, geometry["image"])
        if cuda:
            torch.cuda.empty_cache()
        print(
            f"pipeline: UNet {geometry['unet_params'] / 1e6:.0f}M, VAE {geometry['vae_params'] / 1e6:.0f}M, text encoder {geometry['text_params'] / 1e6:.0f}M params; "
            f"{geometry['image']}px images; {args.n} v {args.n}; batch {args.batch}; built and saved in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        for dtype_name in args.dtypes.split(","):
            if time.perf_counter() - started > args.budget_s:
                print(f"{dtype_name}: skipped, budget of {args.budget_s:.0f}s spent", flush=True)
                continue
            ratios = measure(args, dtype_name, folder, sets, geometry, started)
            if ratios is not None:
                summary.append((dtype_name, *ratios))
            if cuda:
                torch.cuda.empty_cache()
    print(f"SUMMARY latent NAA audit vs raw UNet forward ceiling ({'tiny' if args.tiny else 'SD 1.5-sized'}, {where}, {args.n} v {args.n}, batch {args.batch}; goals: float32 >= 0.95, bfloat16 >= 0.90):")
    for dtype_name, ratio, wall in summary:
        print(f"  {dtype_name:9s} attack/ceiling ratio {ratio:.3f} (median of rounds, encodings warm); whole audit() call {wall:.3f}")
    print(f"total {time.perf_counter() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main()
