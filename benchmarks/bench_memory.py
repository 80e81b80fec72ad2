"""Peak memory of an audit as the number of samples grows (issue 10: it must stay flat).

    python benchmarks/bench_memory.py [--sizes 1000,4000,16000] [--image 32] [--work DIR] [--compare PATH]
    python benchmarks/bench_memory.py --latent [--sizes 250,1000,4000] ...

For each size N, writes N member and N non-member random PNGs (``--image`` pixels square, RGB)
and a tiny random UNet, then audits them with the loss attack in a fresh subprocess and prints
that process's resident memory (RSS from /proc): before the audit (libraries imported), once its
sets are listed and checked (``prepare_audit``: the data path, before any model), its peak over
the whole audit (sampled every 5 ms), the high-water mark ``ru_maxrss``, and the wall time. ``--compare PATH`` repeats every run with another
naa-guard checkout first on PYTHONPATH (e.g. a version that decoded whole sets), for contrast.
``--latent`` audits the committed tiny Stable Diffusion pipeline (tests/fixtures/tiny_sd) instead,
on 32x32 captioned imagefolders (one caption per image in metadata.jsonl), with the loss and PIA
attacks: the VAE latents and text embeddings are what a latent audit could keep per image.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import make_latent_workload, make_workload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import os, resource, sys, threading, time
import torch, diffusers, sklearn, PIL.Image  # imported before the baseline: their import-time memory is not the audit's
if sys.argv[2] == "latent":
    import transformers, peft
from naa_guard.attacks import ATTACKS
from naa_guard.audit import prepare_audit
from naa_guard.policy import load_policy

page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
peak, done = [rss()], threading.Event()
def sample():
    while not done.wait(0.005):
        peak[0] = max(peak[0], rss())
baseline = rss()
threading.Thread(target=sample, daemon=True).start()
started = time.perf_counter()
prepared = prepare_audit(load_policy(sys.argv[1]), progress=False)  # sets listed (or loaded) and checked, no model yet
checked = rss()
for name, params in prepared.policy.attacks.items():  # then scored, as audit() does for untuned attacks
    prepared.measure(ATTACKS[name](params), prepared.members, prepared.nonmembers)
seconds = time.perf_counter() - started
done.set()
peak[0] = max(peak[0], rss())
print(baseline, checked, peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, seconds, len(prepared.members) + len(prepared.nonmembers))
"""
MIB = 1 << 20


def peak_of_child(policy: Path, pythonpath: Path, kind: str = "pixel") -> tuple[float, float, float, float, float, int]:
    """Return RSS before the audit, once its sets are checked, its peak, the high-water mark (MiB); seconds; samples."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    # cwd outside any checkout: `python -c` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy), kind], env=env, cwd=policy.parent, check=True, capture_output=True, text=True).stdout
    baseline, checked, peak, high_water, seconds, samples = out.split()[-6:]
    return int(baseline) / MIB, int(checked) / MIB, int(peak) / MIB, int(high_water) / MIB, float(seconds), int(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", help="samples per side, comma-separated (default 1000,4000,16000; 250,1000,4000 with --latent)")
    parser.add_argument("--latent", action="store_true", help="the tiny Stable Diffusion pipeline on captioned images")
    parser.add_argument("--image", type=int, default=32, help="image side in pixels (RGB)")
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--compare", type=Path, help="another naa-guard checkout to measure the same way")
    parser.add_argument("--width", type=int, default=4, help="channels of the UNet's first block (small: memory, not speed, is measured)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-guard-memory-"))
    checkouts = [("this checkout", REPO)] + ([(f"{args.compare}", args.compare)] if args.compare else [])
    sizes = args.sizes or ("250,1000,4000" if args.latent else "1000,4000,16000")
    if args.latent:
        print("loss and PIA attacks, the tiny SD pipeline (tests/fixtures/tiny_sd), 32x32x3 PNGs with one caption each, N members + N non-members;")
    else:
        print(f"loss attack, tiny UNet (width {args.width}), {args.image}x{args.image}x3 PNGs, N members + N non-members, fresh process per run;")
    print("RSS in MiB: before the audit (libraries imported); once its sets are listed and checked (the data path, no model");
    print("yet); its peak (sampled every 5 ms; loading the model adds ~250 MiB of lazily imported code, the same for every N)")
    for size in (int(size) for size in sizes.split(",")):
        if args.latent:
            policy = make_latent_workload(work / f"latent-n{size}", size, attacks="{loss: {}, pia: {}}")
        else:
            policy = make_workload(work / f"n{size}-w{args.width}", size, size=args.image, channels=3, width=args.width)
        for label, checkout in checkouts:
            baseline, checked, peak, high_water, seconds, samples = peak_of_child(policy, checkout, "latent" if args.latent else "pixel")
            print(
                f"  N={size:6d} per side ({samples} scored)  {label}: before {baseline:4.0f}, sets checked {checked:4.0f} "
                f"(+{checked - baseline:3.0f}), peak {peak:4.0f}, high-water mark {high_water:4.0f}; audit {seconds:6.1f} s", flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
