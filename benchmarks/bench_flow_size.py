"""SD3-medium- and Flux-sized flow audits: peak RSS and time per image, the text encoders released before the transformer.

    python benchmarks/bench_flow_size.py --family sd3|flux [--dtype bfloat16] [--device cpu|cuda] [--image 256]
        [--n 4] [--batch 4] [--attacks loss] [--pad-multiple 16] [--scale full|tiny] [--layers N | --double N --single N]
        [--ceiling] [--rounds 2] [--whole] [--work DIR] [--keep] [--dry-run]

Builds, with random weights and nothing downloaded, a pipeline of the family's real shape and saves it as a
diffusers folder in ``--dtype`` (the VAE in float32, as the audit encodes; one component at a time, in a child
process, so that neither the build's memory nor the sum of the parts is the audit's):

- ``sd3``: SD3-medium: SD3Transformer2DModel with its config (24 layers, 24 heads of 64, 2.0B parameters),
  CLIP-L and OpenCLIP bigG (CLIPTextModelWithProjection, 768 / 1280 wide, 12 / 32 layers), T5-XXL's encoder
  (4.7B: d_model 4096, 24 layers, 64 heads, d_ff 10240, gated GELU, vocabulary 32128) and the 16-channel VAE;
- ``flux``: Flux.1-dev: FluxTransformer2DModel (19 double + 38 single blocks, 24 heads of 128, guidance
  input; 11.9B), CLIP-L (CLIPTextModel), T5-XXL's encoder and the 16-channel VAE.

``--layers`` (sd3) / ``--double`` / ``--single`` (flux) shrink only the transformer (e.g. to measure the text
encoders' part at full size where the whole transformer does not fit); ``--scale tiny`` builds the tiny test
shapes instead (a check of the script in seconds). ``--image`` is the pixel size (the transformer's weights do
not depend on it). The character-level test tokenizers stand in for the real ones (their ids are within the
real vocabularies); the token counts are the pipelines' (77 for CLIP; T5 256 for SD3, 512 for Flux).

Then one loss-only audit (``naa_guard.audit.audit``; a measurement, so the gates' minimum of 20 samples per
side is not checked in this process; the model loaded from its folder in two parts, see
``naa_guard.scoring.models``) of ``--n`` random images per side under one prompt, with the RSS sampled every 20
ms per phase: loading the text encoders and VAE, encoding, loading the transformer and VAE, scoring. Printed:
each component's parameters and bytes, each phase's seconds and peak RSS, the RSS just before the transformer
loads (the text encoders released), the process's peak RSS (``ru_maxrss``), and what the peak would have been
had the text encoders stayed (the encoding phase's peak plus the transformer's bytes in memory: a lower bound of
the old one-load path, which also loaded the transformer beside them). ``--whole`` runs that one-load path
instead (the whole pipeline handed to the audit) and measures it; only where it fits.

``--pad-multiple`` sets the rows model calls are padded to (the audit's 16 by default). On a 2-core CPU a real
size audit pads 4 images to 16 rows of T5 and transformer: ``--pad-multiple 1`` times the 4 rows only (memory
changes little: activations, not weights); the printout says which was used.

``--ceiling``: after the audit, the transformer part alone, a bare ``transformer(...)`` forward on random
inputs at the rows of an audit call, against the attack scoring those rows from the audit's stored encodings
(``score_chunk``), ``--rounds`` times: ratio = bare forward / attack per image-query (1.0: no overhead).
``--dry-run`` prints the components' parameters and bytes (built on the meta device) and what would be run.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_latent_gpu import PROMPT, TOKENIZER, write_sets  # noqa: E402
from bench_real_size import GIB, PhaseMemory  # noqa: E402
from flow_ceiling import ceiling  # noqa: E402

VAE_16 = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
)  # fmt: skip
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, relative_attention_num_buckets=32, feed_forward_proj="gated-gelu")
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu")
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280, hidden_act="gelu")
TINY_T5 = dict(vocab_size=200, d_model=80, d_kv=8, d_ff=37, num_layers=1, num_heads=2, relative_attention_num_buckets=8)


def components(args: argparse.Namespace) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Return name -> (library, class, config) of every weighted component of the pipeline to build."""
    tiny, image = args.scale == "tiny", args.image
    vae = dict(VAE_16, sample_size=image, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3) if tiny else dict(VAE_16, sample_size=image)
    factor = 4 if tiny else 8
    t5 = dict(TINY_T5 if tiny else T5_XXL, d_model=80 if tiny else 4096)
    clip_l = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, projection_dim=32) if tiny else CLIP_L
    if args.family == "sd3":
        vae.update(scaling_factor=1.5305, shift_factor=0.0609)
        clip_g = dict(hidden_size=48, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, projection_dim=32) if tiny else CLIP_G
        transformer = dict(
            sample_size=image // factor, patch_size=2, in_channels=16, out_channels=16, num_layers=args.layers or (1 if tiny else 24),
            attention_head_dim=8 if tiny else 64, num_attention_heads=2 if tiny else 24, joint_attention_dim=t5["d_model"],
            caption_projection_dim=16 if tiny else 1536, pooled_projection_dim=clip_l["projection_dim"] + clip_g["projection_dim"], pos_embed_max_size=192,
        )  # fmt: skip
        return {
            "transformer": ("diffusers", "SD3Transformer2DModel", transformer), "vae": ("diffusers", "AutoencoderKL", vae),
            "text_encoder": ("transformers", "CLIPTextModelWithProjection", clip_l), "text_encoder_2": ("transformers", "CLIPTextModelWithProjection", clip_g),
            "text_encoder_3": ("transformers", "T5EncoderModel", t5),
        }  # fmt: skip
    vae.update(scaling_factor=0.3611, shift_factor=0.1159)
    transformer = dict(
        patch_size=1, in_channels=64, num_layers=args.double if args.double is not None else (1 if tiny else 19),
        num_single_layers=args.single if args.single is not None else (1 if tiny else 38), attention_head_dim=8 if tiny else 128,
        num_attention_heads=2 if tiny else 24, joint_attention_dim=t5["d_model"], pooled_projection_dim=clip_l["hidden_size"],
        guidance_embeds=True, axes_dims_rope=(2, 2, 4) if tiny else (16, 56, 56),
    )  # fmt: skip
    return {
        "transformer": ("diffusers", "FluxTransformer2DModel", transformer), "vae": ("diffusers", "AutoencoderKL", vae),
        "text_encoder": ("transformers", "CLIPTextModel", clip_l), "text_encoder_2": ("transformers", "T5EncoderModel", t5),
    }  # fmt: skip


def instantiate(library: str, class_name: str, config: dict[str, Any]) -> Any:
    """Return the component with random weights (on the current default device and dtype)."""
    import diffusers
    import transformers

    if library == "diffusers":
        return getattr(diffusers, class_name)(**config)
    from transformers import CLIPTokenizer

    if class_name == "T5EncoderModel":
        return transformers.T5EncoderModel(transformers.T5Config(is_encoder_decoder=False, use_cache=False, **config))
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    vocab = 49408 if config["hidden_size"] > 64 else len(tokenizer)
    clip = transformers.CLIPTextConfig(vocab_size=vocab, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **config)
    return getattr(transformers, class_name)(clip)


def sizes(parts: dict[str, tuple[str, str, dict[str, Any]]], dtype: Any) -> dict[str, tuple[int, int]]:
    """Return name -> (parameters, bytes in memory at the audit's dtype; the VAE float32), built on the meta device."""
    import torch

    out = {}
    for name, spec in parts.items():
        with torch.device("meta"):
            module = instantiate(*spec)
        count = sum(p.numel() for p in module.parameters())
        out[name] = (count, count * (4 if name == "vae" else torch.tensor([], dtype=dtype).element_size()))
    return out


def save(module: Any, folder: Path, library: str) -> None:
    """Save a component as save_pretrained does (config.json, one .safetensors file), streamed tensor by tensor.

    safetensors' save_file holds a copy of every tensor's bytes at once (T5-XXL: 9.5 GB more); here at most
    one tensor's. A tensor tied to one already written (T5's embed_tokens = shared) is written once, as
    transformers does.
    """
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if library == "diffusers":
        module.save_config(folder)
        file = folder / "diffusion_pytorch_model.safetensors"
    else:
        module.config.architectures = [type(module).__name__]
        module.config.dtype = next(module.parameters()).dtype  # as save_pretrained records it (dtype "auto" loads it)
        module.config.save_pretrained(folder)
        file = folder / "model.safetensors"
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    tensors, seen, header, offset = [], set(), {"__metadata__": {"format": "pt"}}, 0
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        tensors.append(tensor)
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with file.open("wb") as handle:
        handle.write(len(text).to_bytes(8, "little") + text)
        for tensor in tensors:
            handle.write(tensor.contiguous().view(torch.uint8).numpy().data)


def build(folder: Path, args: argparse.Namespace) -> None:
    """Save the random pipeline into ``folder``, one component at a time (each freed before the next)."""
    import diffusers
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from tiny_flow import t5_parts
    from transformers import CLIPTokenizer

    diffusers.logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    device = "cuda" if args.device.startswith("cuda") else "cpu"  # random init on a GPU: seconds instead of minutes
    index = {"_class_name": "StableDiffusion3Pipeline" if args.family == "sd3" else "FluxPipeline", "_diffusers_version": diffusers.__version__}
    for name, (library, class_name, config) in components(args).items():
        began = time.perf_counter()
        torch.manual_seed(len(name))
        torch.set_default_dtype(torch.float32 if name == "vae" else dtype)
        with torch.device(device):
            module = instantiate(library, class_name, config)
        torch.set_default_dtype(torch.float32)
        save(module.to("cpu"), folder / name, library)
        index[name] = [library, class_name]
        print(f"  built {name} ({class_name}) in {time.perf_counter() - began:.0f}s", flush=True)
        del module
        gc.collect()
    tokenizer = CLIPTokenizer.from_pretrained(TOKENIZER)
    tokenizer.model_max_length = 77
    t5_tokenizer = t5_parts(0)[1]
    t5_tokenizer.model_max_length = 256 if args.family == "sd3" else 512
    t5_name = "tokenizer_3" if args.family == "sd3" else "tokenizer_2"
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3")[: 3 if args.family == "sd3" else 2]:
        (t5_tokenizer if name == t5_name else tokenizer).save_pretrained(folder / name)
        index[name] = ["transformers", "T5TokenizerFast" if name == t5_name else "CLIPTokenizer"]
    FlowMatchEulerDiscreteScheduler(shift=3.0).save_pretrained(folder / "scheduler")
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def make_policy(model: Path, sets: tuple[Path, Path], args: argparse.Namespace) -> Any:
    from naa_guard.policy import parse_policy

    raw = {
        "version": 1, "name": f"flow-size-{args.family}",
        "model": {"path": str(model)},
        "data": {"members": str(sets[0]), "nonmembers": str(sets[1]), "prompt": PROMPT, "conditioning": "prompt"},
        "attacks": {name: {} for name in args.attacks.split(",")},
        "checks": {"shift_auc": None},
        "thresholds": {"auc": 0.99, "tpr_at_1pct_fpr": None, "decision": "point", "unresolvable": "warn"},
        "runtime": {"device": args.device, "dtype": args.dtype, "batch_size": args.batch, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, model.parent / "bench.naa.yaml")


def instrument(memory: PhaseMemory, before_transformer: list[int], captured: list[Any]) -> None:
    """Route the audit's part loads, encoding and scoring through ``memory``'s phase clocks (this process only)."""
    import naa_guard.scoring.encodings as encodings
    import naa_guard.scoring.models as models
    import naa_guard.scoring.runner as runner
    import naa_guard.scoring.samplepass as samplepass

    load_model = models.load_model

    def load(policy: Any, info: Any, timings: Any = None, *, part: str = "all") -> Any:
        if part in ("denoiser", "all"):
            before_transformer.append(memory.rss())
        return memory.timed(f"load {part}", load_model)(policy, info, timings, part=part)

    models.load_model = load  # type: ignore[assignment]
    encode = memory.timed("encode", encodings.encode_chunk)

    def keep(*args: Any, **kwargs: Any) -> Any:
        captured.append(encode(*args, **kwargs))
        return captured[-1]

    encodings.encode_chunk = samplepass.encode_chunk = keep  # type: ignore[assignment]
    runner.score_chunk = memory.timed("attacks", runner.score_chunk)  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", choices=("sd3", "flux"), required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", type=int, default=256, help="pixel size (a multiple of 16)")
    parser.add_argument("--n", type=int, default=4, help="random images per side")
    parser.add_argument("--batch", type=int, default=4, help="runtime.batch_size")
    parser.add_argument("--attacks", default="loss")
    parser.add_argument("--pad-multiple", type=int, default=16, help="rows model calls are padded to (the audit's: 16)")
    parser.add_argument("--scale", choices=("full", "tiny"), default="full")
    parser.add_argument("--layers", type=int, default=None, help="sd3: transformer layers (default 24)")
    parser.add_argument("--double", type=int, default=None, help="flux: double-stream blocks (default 19)")
    parser.add_argument("--single", type=int, default=None, help="flux: single-stream blocks (default 38)")
    parser.add_argument("--ceiling", action="store_true", help="bare transformer forward vs the attack, after the audit")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--whole", action="store_true", help="the one-load path: the whole pipeline handed to the audit")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    if args.build_only is not None:
        build(args.build_only, args)
        return
    import torch

    parts = components(args)
    table = sizes(parts, getattr(torch, args.dtype))
    text = sum(size for name, (_, size) in table.items() if name.startswith("text_encoder"))
    print(f"{args.family} ({args.scale}), {args.dtype}, {args.image}px, device {args.device}:")
    for name, (count, size) in table.items():
        print(f"  {name:15s} {parts[name][1]:30s} {count / 1e9:7.3f}B parameters  {size / GIB:7.2f} GiB in memory")
    vae, transformer = table["vae"][1], table["transformer"][1]
    print(f"  text encoders + VAE {(text + vae) / GIB:.2f} GiB; transformer + VAE {(transformer + vae) / GIB:.2f} GiB; all at once {(text + vae + transformer) / GIB:.2f} GiB")
    if args.dry_run:
        print(f"dry run: would build into {args.work or 'a temporary folder'} and audit {args.n} v {args.n} ({args.attacks}) at batch {args.batch}, pad {args.pad_multiple}"
              f"{', then the ceiling' if args.ceiling else ''}{', whole pipeline at once' if args.whole else ', in two parts'}")  # fmt: skip
        return
    run(args, table)


def run(args: argparse.Namespace, table: dict[str, tuple[int, int]]) -> None:
    """Build (child process), then audit here with the RSS sampled per phase; print the figures."""
    import torch

    from naa_guard.audit import audit
    from naa_guard.samples import list_samples
    from naa_guard.targets import base, load_target, read_model_info, resolve_device

    import naa_guard.audit as audit_module

    started = time.perf_counter()
    base.PAD_MULTIPLE = args.pad_multiple
    # a measurement at --n per side, not a verdict: the gates' minimum counts (20 per side) are not checked in this process
    audit_module.check_sample_counts = lambda *args, **kwargs: []  # type: ignore[assignment]
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-flow-size-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model-{args.family}-{args.scale}-{args.dtype}"
    memory = PhaseMemory()
    try:
        if not (model / "model_index.json").is_file():
            began = time.perf_counter()
            command = [sys.executable, __file__, "--build-only", str(model)] + [a for a in sys.argv[1:] if a != "--keep"]
            subprocess.run(command, check=True)
            print(f"built in {time.perf_counter() - began:.0f}s; {sum(f.stat().st_size for f in model.rglob('*') if f.is_file()) / GIB:.2f} GiB on disk", flush=True)
        info = read_model_info(model)
        sets = write_sets(work, args.n, info.sample_size)
        policy = make_policy(model, sets, args)
        memory.phase = "idle"
        gc.collect()
        base_rss = memory.rss()
        before_transformer: list[int] = []
        captured: list[Any] = []
        instrument(memory, before_transformer, captured)
        began = time.perf_counter()
        handed = None
        if args.whole:  # the one-load path: every component at once, handed to the audit
            memory.phase = "load all"
            handed = load_target(info, allow_pickle=False, device=args.device, dtype=args.dtype)
            memory.note()
            memory.seconds["load all"] = time.perf_counter() - began
            before_transformer.append(memory.rss())
        memory.phase = "audit"
        result = audit(policy, target=handed, progress=False, checked=True)
        audit_seconds = time.perf_counter() - began
        del handed
        gc.collect()
        if args.ceiling and captured:
            members = list_samples(sets[0], size=info.sample_size, channels=3, seed=0)
            memory.phase = "ceiling"
            began_ceiling = time.perf_counter()
            ceiling(policy, info, args, members, captured[0])
            memory.seconds["ceiling"] = time.perf_counter() - began_ceiling
    finally:
        memory.stop()
        if args.work is None or not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\n{'whole pipeline at once' if args.whole else 'in two parts'}; pad {args.pad_multiple} rows; {where}; torch {torch.__version__}")
    print(f"RSS before loading {base_rss / GIB:.2f} GiB; phases (seconds; peak RSS in the phase):")
    for phase in ("load encoders", "encode", "load denoiser", "load all", "attacks", "ceiling"):
        if phase in memory.seconds or phase in memory.peaks:
            print(f"  {phase:14s} {memory.seconds.get(phase, 0.0):8.1f}s  peak {memory.peaks.get(phase, 0) / GIB:6.2f} GiB")
    if before_transformer:
        print(f"RSS {'just before the transformer loads' if not args.whole else 'with every component loaded'}: {before_transformer[0] / GIB:.2f} GiB (the text encoders {'released' if not args.whole else 'held'})")
    for name, row in result.attacks.items():
        print(f"  attack {name}: {row.seconds:.1f}s for {2 * args.n} images x {row.queries_per_sample} queries = {row.seconds / (2 * args.n * row.queries_per_sample):.2f}s per image-query (includes the transformer's load)")
    encode_peak = max(memory.peaks.get("load encoders", 0), memory.peaks.get("encode", 0))
    summed = encode_peak + table["transformer"][1]
    print(f"SUMMARY {args.family} {args.scale} {args.dtype} {args.image}px {where}: peak RSS {peak / GIB:.2f} GiB (ru_maxrss); "
          f"encoders part {encode_peak / GIB:.2f}, transformer part {memory.peaks.get('load denoiser', memory.peaks.get('load all', 0)) / GIB:.2f} / attacks {memory.peaks.get('attacks', 0) / GIB:.2f} GiB; "
          f"without the release at least {summed / GIB:.2f} GiB (encoders part + transformer {table['transformer'][1] / GIB:.2f}); "
          f"audit {audit_seconds:.0f}s = {audit_seconds / (2 * args.n):.1f}s per image; total {time.perf_counter() - started:.0f}s", flush=True)  # fmt: skip
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / GIB:.2f} GiB allocated ({torch.cuda.max_memory_reserved(device) / GIB:.2f} GiB reserved)")


if __name__ == "__main__":
    main()
