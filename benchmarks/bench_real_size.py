"""A latent audit at real model size: seconds per phase, peak memory, time per image per query vs the bare UNet.

    python benchmarks/bench_real_size.py [--shape sd15|sdxl|tiny] [--n 64] [--batch 4] [--attacks sima]
                                         [--score-n N] [--device cpu] [--work DIR] [--keep]

Builds, with random weights and nothing downloaded, a pipeline of the chosen shape and saves it as a
diffusers folder: ``sd15`` is Stable Diffusion 1.5's (``bench_latent_gpu.build_pipeline``: 860M UNet,
512 px, 4.1 GB of float32 weights), ``sdxl`` SDXL's (2.6B UNet with 10 transformer layers in the
deepest blocks, two CLIP text encoders 768 + 1280 wide, 1024 px, about 10 GB), ``tiny`` the tiny SD
fixture's shape (32 px) for a check of the script. SD3-medium and Flux shapes come once naa-guard
audits those families. ``--n`` random uint8 images per side (an .npz each) under one prompt.

Then, in this process, one audit as ``naa-guard check`` runs it, phase by phase:

- ``hashing``: reading the model and sample files for the cache keys (inside the audit);
- ``loading`` and ``probe``: ``naa_guard.scoring.models.load_model`` (offline load; the probe's one
  image and one UNet query);
- ``encode``: the sample pass's VAE and text encodings of every chunk (``encode_chunk``);
- each attack's scoring (the attack's own ``seconds``), and ``checks+metrics``: the rest of the
  audit call (listing, overlap and shift checks, metrics, bootstrap, gate).

Peak RSS is sampled every 20 ms per phase; the process's high-water mark (``ru_maxrss``) is printed
against the goal ``1.5 x weights + 2 GB``. The bare forward ceiling is ``unet(x, t, text)`` under
inference_mode at ``model_batch(--batch)`` rows and at the padded rows the audit's calls compute,
measured in the same run; the attacks' seconds per image per query are printed beside it.

``--score-batches B`` first encodes B batches of members (``encode_chunk``) and scores them with
each attack (the audit's ``score_chunk``; no metrics, no gate), then runs what an audit does before
its first attack at ``--n`` per side (``prepare_audit``: hashing, the sample pass with every chunk's
encodings, the checks), so that a CPU times the UNet queries of a real-size model in minutes while
the memory is that of the ``--n``-per-side sample pass. The VAE's progress and the RSS high-water
mark are printed every ``--n / 8`` images. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latent_gpu import PROMPT, TOKENIZER, build_pipeline, write_sets  # noqa: E402

GIB = 1 << 30


class PhaseMemory:
    """Samples this process's RSS every 20 ms and keeps the peak per phase label."""

    def __init__(self) -> None:
        self.phase, self.peaks, self.seconds = "setup", {}, {}
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.note()

    def note(self) -> None:
        phase = self.phase  # read once: the label may change while the line runs (the old phase's peak was then stored under the new label)
        rss = self.rss()
        self.peaks[phase] = max(self.peaks.get(phase, 0), rss)

    def timed(self, phase: str, function: Any) -> Any:
        """Return ``function`` wrapped so its calls count as ``phase`` (time summed, memory peak kept)."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            outer, self.phase = self.phase, phase
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.note()
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - began
                self.phase = outer
                if phase == "encode":
                    print(f"encoded a chunk in {time.perf_counter() - began:.1f}s; RSS peak so far {self.peaks[phase] / GIB:.2f} GiB", flush=True)

        return wrapper

    def stop(self) -> None:
        self._done.set()


def build_sdxl(folder: Path, device: str) -> dict[str, Any]:
    """Save a random pipeline of SDXL base's shape into ``folder``; return its geometry."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    diffusers.logging.set_verbosity_error()
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    tokenizer.model_max_length = 77
    vocab = len(tokenizer)

    def clip(hidden: int, layers: int, heads: int, projection: bool) -> Any:
        config = CLIPTextConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
            max_position_embeddings=77, projection_dim=1280, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        )  # fmt: skip
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=1024, scaling_factor=0.13025, block_out_channels=(128, 256, 512, 512),
            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )  # fmt: skip
        first, second = clip(768, 12, 12, False), clip(1280, 32, 20, True)
    scheduler = EulerDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    pipeline = StableDiffusionXLPipeline(vae=vae, text_encoder=first, text_encoder_2=second, tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    pipeline.save_pretrained(folder, safe_serialization=True)
    text = sum(p.numel() for p in first.parameters()) + sum(p.numel() for p in second.parameters())
    return {"image": 1024, "unet_params": sum(p.numel() for p in unet.parameters()), "vae_params": sum(p.numel() for p in vae.parameters()), "text_params": text, "tokens": 77, "hidden": 2048, "sdxl": True}


def make_policy(model: Path, sets: tuple[Path, Path], args: argparse.Namespace) -> Any:
    from naa_guard.policy import parse_policy

    raw = {
        "version": 1, "name": f"real-size-{args.shape}",
        "model": {"path": str(model)},
        "data": {"members": str(sets[0]), "nonmembers": str(sets[1]), "prompt": PROMPT, "conditioning": "prompt"},
        "attacks": {name: {} for name in args.attacks.split(",")},
        "checks": {"shift_auc": None},
        "thresholds": {"auc": 0.99, "tpr_at_1pct_fpr": None, "decision": "point"},
        "runtime": {"device": args.device, "dtype": "float32", "batch_size": args.batch, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, model.parent / "bench.naa.yaml")


def instrument(memory: PhaseMemory) -> None:
    """Route the audit's hashing, encoding and scoring through ``memory``'s phase clocks (this process only)."""
    import naa_guard.samples.digests as digests
    import naa_guard.scoring.encodings as encodings
    import naa_guard.scoring.runner as runner
    import naa_guard.scoring.samplepass as samplepass

    name = "_digest_lists" if hasattr(digests, "_digest_lists") else "_digest_files"  # a checkout before one-pass digests
    setattr(digests, name, memory.timed("hashing", getattr(digests, name)))
    encode = memory.timed("encode", encodings.encode_chunk)
    encodings.encode_chunk = samplepass.encode_chunk = encode  # type: ignore[assignment]
    runner.score_chunk = memory.timed("attacks", runner.score_chunk)  # type: ignore[assignment]


def ceiling(target: Any, rows: int, args: argparse.Namespace, repeats: int) -> float:
    """Return seconds per row of a bare UNet forward on ``rows`` random latents (float32, inference_mode)."""
    import torch

    latent = target.sample_size // 8
    x = torch.randn((rows, 4, latent, latent), device=target.device)
    timestep = torch.full((rows,), 80, device=target.device, dtype=torch.long)
    hidden = {"sdxl": 2048, "tiny": 32}.get(args.shape, 768)
    text = torch.randn((rows, 77, hidden), device=target.device)
    added = {"text_embeds": torch.randn((rows, 1280), device=target.device), "time_ids": torch.ones((rows, 6), device=target.device)} if args.shape == "sdxl" else None
    sync = torch.cuda.synchronize if target.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        if target.device.type == "cuda":  # kernels chosen, memory allocated (a CPU call costs seconds at real size)
            target.unet(x, timestep, encoder_hidden_states=text, added_cond_kwargs=added)
        sync()
        began = time.perf_counter()
        for _ in range(repeats):
            target.unet(x, timestep, encoder_hidden_states=text, added_cond_kwargs=added)
        sync()
    return (time.perf_counter() - began) / (repeats * rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("sd15", "sdxl", "tiny"), default="sd15")
    parser.add_argument("--n", type=int, default=64, help="images per side for hashing, encoding and memory")
    parser.add_argument("--score-batches", type=int, default=None, help="score only this many batches of members per attack (no gate); default: the whole audit")
    parser.add_argument("--batch", type=int, default=4, help="runtime.batch_size")
    parser.add_argument("--attacks", default="sima")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ceiling-repeats", type=int, default=1)
    parser.add_argument("--ceiling-rows", default="batch,padded", help="bare UNet forward at: batch (model_batch(--batch) rows), padded (the rows of an audit call)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the pipeline and sets (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep --work's pipeline for the next run (built once)")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    if args.build_only is not None:
        device = "cuda" if args.device.startswith("cuda") else "cpu"  # random init on the GPU: seconds instead of minutes
        build_sdxl(args.build_only, device) if args.shape == "sdxl" else build_pipeline(args.build_only, tiny=args.shape == "tiny", device=device)
        return
    started = time.perf_counter()

    import torch

    from naa_guard.scoring.models import load_model
    from naa_guard.scoring.runner import model_batch
    from naa_guard.targets import PAD_MULTIPLE, read_model_info, resolve_device

    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-real-size-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model-{args.shape}"
    memory = PhaseMemory()
    try:
        if not (model / "model_index.json").is_file():  # built in a child process: its memory is not the audit's
            build = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build-only", str(model), "--shape", args.shape, "--device", args.device], check=True)
            print(f"built {args.shape} in {time.perf_counter() - build:.0f}s", flush=True)
        info = read_model_info(model)
        weights = sum(f.stat().st_size for f in info.identity_files() if f.suffix == ".safetensors")
        sets = write_sets(work, args.n, info.sample_size)
        policy = make_policy(model, sets, args)
        step = model_batch(args.batch)
        padded = step + (-step % PAD_MULTIPLE)
        scored = f"{args.score_batches} batch(es) of members scored per attack" if args.score_batches else f"{args.n} v {args.n} scored"
        print(f"device {device} ({where}); torch {torch.__version__}; {args.shape}: {info.sample_size}px, {weights / GIB:.2f} GiB of weights; "
              f"{args.n} v {args.n} encoded, {scored}; batch {args.batch} ({padded} rows per UNet call); attacks {args.attacks}", flush=True)  # fmt: skip
        memory.phase = "idle"
        base_rss = memory.rss()
        import naa_guard.scoring.encodings as encodings_module

        plain_encode = encodings_module.encode_chunk
        instrument(memory)
        timings: dict[str, float] = {}
        memory.phase = "loading"
        target = load_model(policy, info, timings)
        memory.note()
        memory.seconds.update(loading=timings["load"], probe=timings["probe"])
        print(f"loaded in {timings['load']:.1f}s, probe {timings['probe']:.1f}s, RSS {memory.rss() / GIB:.2f} GiB", flush=True)
        memory.phase = "ceiling"
        rows = {"batch": step, "padded": padded}
        began = time.perf_counter()
        per_row = {rows[name]: ceiling(target, rows[name], args, args.ceiling_repeats) for name in args.ceiling_rows.split(",")}
        memory.seconds["ceiling"] = time.perf_counter() - began
        print("bare UNet forward: " + ", ".join(f"{seconds:.3f}s per row at {count} rows" for count, seconds in per_row.items()), flush=True)
        per_image_encode = None
        if args.score_batches:  # the attacks timed on a few batches first, then the memory of the whole sample pass
            memory.phase = "first batches"
            began = time.perf_counter()
            per_query, per_image_encode = first_batches(policy, target, args, sets[0], plain_encode)
            memory.seconds["first batches"] = time.perf_counter() - began
        watch_vae(target, memory, max(8, args.n // 8))
        memory.phase = "audit"
        began = time.perf_counter()
        if args.score_batches:
            check_and_encode(policy, target)
        else:
            per_query = run_audit(policy, target, args)
        audit_seconds = time.perf_counter() - began
    finally:
        memory.stop()
        if args.work is None or not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    goal = 1.5 * weights + 2 * GIB
    print("\nphases (seconds; peak RSS while in the phase):")
    for phase in ("hashing", "loading", "probe", "ceiling", "first batches", "encode", "attacks"):
        peak_text = f"peak {memory.peaks.get(phase, 0) / GIB:6.2f} GiB" if phase != "probe" else "(its peak is within loading's)"
        print(f"  {phase:13s} {memory.seconds.get(phase, 0.0):9.1f}s  {peak_text}")
    inside = ("hashing", "encode") if args.score_batches else ("hashing", "encode", "attacks")  # --score-batches: the attacks ran before the audit part
    other = audit_seconds - sum(memory.seconds.get(p, 0.0) for p in inside)
    print(f"  the rest      {other:9.1f}s  (listing, overlap / shift checks{', metrics, bootstrap, gate' if not args.score_batches else ''}: the audit part's {audit_seconds:.1f}s less hashing, encode and scoring)")
    if per_image_encode is not None:
        print(f"  encode of the first batches: {per_image_encode:.2f}s per image (VAE and text encoder)")
    for name, (seconds, queries) in per_query.items():
        print(f"  attack {name}: {seconds:.1f}s for {queries} image-queries, {seconds / queries:.3f}s per image per query")
    print(f"peak RSS {peak / GIB:.2f} GiB (ru_maxrss; {base_rss / GIB:.2f} GiB before loading); weights {weights / GIB:.2f} GiB; "
          f"goal 1.5 x weights + 2 GiB = {goal / GIB:.2f} GiB: {'within' if peak <= goal else 'OVER'}")  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / GIB:.2f} GiB allocated ({torch.cuda.max_memory_reserved(device) / GIB:.2f} GiB reserved)")
    total = sum(seconds for seconds, _ in per_query.values()) / max(1, sum(queries for _, queries in per_query.values()))
    bare = ", ".join(f"{seconds:.3f}s/row at {count} rows" for count, seconds in per_row.items())
    print(f"SUMMARY {args.shape} {info.sample_size}px {where} batch {args.batch}: {total:.3f}s per image per query vs bare forward {bare}; "
          f"peak RSS {peak / GIB:.2f} GiB at {args.n} per side (goal {goal / GIB:.2f}); total {time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip


def run_audit(policy: Any, target: Any, args: argparse.Namespace) -> dict[str, tuple[float, int]]:
    """Run the whole audit; return each attack's (seconds, image-queries)."""
    from naa_guard.audit import audit

    result = audit(policy, target=target, progress=False)
    return {name: (attack.seconds, attack.queries_per_sample * 2 * args.n) for name, attack in result.attacks.items()}


def first_batches(policy: Any, target: Any, args: argparse.Namespace, members_path: Path, encode: Any) -> tuple[dict[str, tuple[float, int]], float]:
    """Encode the first ``--score-batches`` batches of members (``encode_chunk``) and score them with each attack
    (the audit's ``score_chunk`` over those encodings; no metrics, no gate). Return each attack's (seconds,
    image-queries) and the encode seconds per image."""
    from naa_guard.attacks import ATTACKS
    from naa_guard.samples import list_samples
    from naa_guard.scoring import runner
    from naa_guard.scoring.runner import model_batch

    step = model_batch(args.batch)
    members = list_samples(members_path, size=target.sample_size, channels=3, limit=args.score_batches * step, seed=0)
    count = len(members)
    began = time.perf_counter()
    encodings = encode(target, members.decode(0, count), (PROMPT,) * count, step, members.names[:count])
    per_image = (time.perf_counter() - began) / count
    print(f"encoded {count} images (VAE one per call, text) in {per_image * count:.1f}s: {per_image:.2f}s per image", flush=True)
    timed = {}
    for name, params in policy.attacks.items():
        attack = ATTACKS[name](params)
        began = time.perf_counter()
        runner.score_chunk(attack, target, members, "members", 0, count, batch_size=args.batch, seed=0, encodings=encodings)
        timed[name] = (time.perf_counter() - began, attack.queries_per_sample * count)
        print(f"attack {name}: {count} members x {attack.queries_per_sample} queries in {timed[name][0]:.1f}s", flush=True)
    return timed, per_image


def check_and_encode(policy: Any, target: Any) -> None:
    """What an audit does before its first attack, at --n per side: hashing, the sample pass with every chunk's encodings, the checks."""
    from naa_guard.audit import prepare_audit
    from naa_guard.samples import reuse_file_digests
    from naa_guard.scoring.encodings import forget_temporary_encodings

    with reuse_file_digests():
        prepare_audit(policy, target=target, progress=False)
    forget_temporary_encodings()


def watch_vae(target: Any, memory: PhaseMemory, every: int) -> None:
    """Print the images encoded so far and the RSS high-water mark every ``every`` images (the VAE's own calls)."""
    encode, seen, began = target.vae.encode, [0], time.perf_counter()

    def spy(pixels: Any, *args: Any, **kwargs: Any) -> Any:
        out = encode(pixels, *args, **kwargs)
        before, seen[0] = seen[0], seen[0] + int(pixels.shape[0])
        if seen[0] // every > before // every:
            high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            print(f"  VAE: {seen[0]} images encoded, {time.perf_counter() - began:.0f}s, RSS {memory.rss() / GIB:.2f} GiB, high-water {high / GIB:.2f} GiB", flush=True)
        return out

    target.vae.encode = spy


if __name__ == "__main__":
    main()
