"""Peak memory of an audit as the number of samples grows (issue 10: it must stay flat).

    python benchmarks/bench_memory.py [--sizes 1000,4000,16000] [--image 32] [--work DIR] [--compare PATH]

For each size N, writes N member and N non-member random PNGs (``--image`` pixels square, RGB)
and a tiny random UNet, then audits them with the loss attack in a fresh subprocess and prints
that process's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at its end, so
torch's own footprint is included) and the audit's wall time. ``--compare PATH`` repeats every run with another
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
import resource, sys, time
from naa_guard.audit import audit
from naa_guard.policy import load_policy
started = time.perf_counter()
result = audit(load_policy(sys.argv[1]), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - started, result.n_members + result.n_nonmembers)
"""


def peak_of_child(policy: Path, pythonpath: Path) -> tuple[float, float, int]:
    """Return (peak RSS in MiB, audit seconds, samples scored) of an audit of ``policy`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy)], env=env, check=True, capture_output=True, text=True).stdout
    peak_kib, seconds, samples = out.split()[-3:]
    return int(peak_kib) / 1024, float(seconds), int(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,4000,16000", help="samples per side, comma-separated")
    parser.add_argument("--image", type=int, default=32, help="image side in pixels (RGB)")
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--compare", type=Path, help="another naa-guard checkout to measure the same way")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-guard-memory-"))
    checkouts = [("this checkout", REPO)] + ([(f"{args.compare}", args.compare)] if args.compare else [])
    print(f"loss attack, tiny UNet, {args.image}x{args.image}x3 PNGs, N members + N non-members; peak RSS of a fresh process (torch included)")
    for size in (int(size) for size in args.sizes.split(",")):
        policy = make_workload(work / f"n{size}", size, size=args.image, channels=3)
        for label, checkout in checkouts:
            peak, seconds, samples = peak_of_child(policy, checkout)
            print(f"  N={size:6d} per side ({samples} scored)  {label}: peak RSS {peak:7.0f} MiB, audit {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
