"""Peak memory of an audit as the number of samples grows (issue 10: it must stay flat).

    python benchmarks/bench_memory.py [--sizes 1000,4000,16000] [--image 32] [--work DIR] [--compare PATH]

For each size N, writes N member and N non-member random PNGs (``--image`` pixels square, RGB)
and a tiny random UNet, then audits them with the loss attack in a fresh subprocess and prints
the growth of that process's resident memory during the audit (RSS read from /proc every 5 ms,
peak minus the RSS before the audit, libraries already imported), beside its high-water mark
(``ru_maxrss``, dominated by torch's import-time peak), and the audit's wall time. ``--compare PATH`` repeats every run with another
naa-guard checkout first on PYTHONPATH (e.g. a version that decoded whole sets), for contrast.
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
from workloads import make_workload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import os, resource, sys, threading, time
from naa_guard.audit import audit
from naa_guard.policy import load_policy
import torch, diffusers, sklearn, PIL.Image  # imported before the baseline: their transient peaks are not the audit's

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
result = audit(load_policy(sys.argv[1]), progress=False)
seconds = time.perf_counter() - started
done.set()
peak[0] = max(peak[0], rss())
print(baseline, peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, seconds, result.n_members + result.n_nonmembers)
"""
MIB = 1 << 20


def peak_of_child(policy: Path, pythonpath: Path) -> tuple[float, float, float, float, int]:
    """Return (RSS before the audit, peak RSS during it, the process's high-water mark, in MiB; seconds; samples)."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy)], env=env, check=True, capture_output=True, text=True).stdout
    baseline, peak, high_water, seconds, samples = out.split()[-5:]
    return int(baseline) / MIB, int(peak) / MIB, int(high_water) / MIB, float(seconds), int(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,4000,16000", help="samples per side, comma-separated")
    parser.add_argument("--image", type=int, default=32, help="image side in pixels (RGB)")
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--compare", type=Path, help="another naa-guard checkout to measure the same way")
    parser.add_argument("--width", type=int, default=4, help="channels of the UNet's first block (small: memory, not speed, is measured)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-guard-memory-"))
    checkouts = [("this checkout", REPO)] + ([(f"{args.compare}", args.compare)] if args.compare else [])
    print(f"loss attack, tiny UNet (width {args.width}), {args.image}x{args.image}x3 PNGs, N members + N non-members, fresh process per run;")
    print("RSS sampled every 5 ms: growth = peak during the audit - RSS before it (libraries imported, model not loaded)")
    for size in (int(size) for size in args.sizes.split(",")):
        policy = make_workload(work / f"n{size}-w{args.width}", size, size=args.image, channels=3, width=args.width)
        for label, checkout in checkouts:
            baseline, peak, high_water, seconds, samples = peak_of_child(policy, checkout)
            print(
                f"  N={size:6d} per side ({samples} scored)  {label}: before {baseline:5.0f} MiB, peak {peak:5.0f} MiB, "
                f"growth {peak - baseline:5.0f} MiB (process high-water mark {high_water:5.0f} MiB), audit {seconds:6.1f} s", flush=True,
            )  # fmt: skip


if __name__ == "__main__":
    main()
