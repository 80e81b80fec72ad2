"""Re-gating from the cache, and the distributed speed-up of 1 vs 2 (or N) processes.

    python benchmarks/bench_scale.py [--per-side 512] [--image 32] [--width 16] [--nproc 1,2] [--work DIR]

Writes a random UNet and two PNG folders (``--per-side`` images each), then:

1. cache: audits once with ``naa-guard audit --cache DIR`` (cold: every chunk scored), then again
   (every chunk read back, the model never loaded); prints both wall times of the whole command
   (Python and torch start-up included) and the second audit's own time.
2. speed-up: runs ``naa-guard audit --nproc N`` without a cache for each N, and prints the wall
   time of the command and the NAA scoring time rank 0 reports (the ``seconds`` of the JSON
   report: from the first chunk handed out to the last gathered), with the speed-up against the
   first N. One OpenMP thread per process (``OMP_NUM_THREADS=1``, torchrun's default), so N
   processes use N cores; N=1 also runs with 2 threads, the fair single-process baseline on 2 cores.

Prints figures; asserts nothing. Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import make_workload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def naa_guard(*args: str, threads: int = 1) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Return (wall seconds, finished process) of ``python -m naa_guard ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-m", "naa_guard", *args], capture_output=True, text=True, env=env, check=False)
    if finished.returncode not in (0, 1):
        raise SystemExit(f"naa-guard {' '.join(args)} failed:\n{finished.stdout}\n{finished.stderr}")
    return time.perf_counter() - started, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-side", type=int, default=512)
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--width", type=int, default=16, help="channels of the UNet's first block")
    parser.add_argument("--nproc", default="1,2")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-guard-scale-"))
    policy = make_workload(work / f"n{args.per_side}-w{args.width}", args.per_side, size=args.image, channels=3, width=args.width, attacks="{naa: {}}")
    print(f"NAA (k=5), random UNet width {args.width}, {args.image}x{args.image}x3 PNGs, {args.per_side} members + {args.per_side} non-members, batch 64")

    cache = work / "cache"
    cold, _ = naa_guard("audit", str(policy), "--quiet", "--cache", str(cache), "--json", str(work / "cold.json"))
    warm, _ = naa_guard("audit", str(policy), "--quiet", "--cache", str(cache), "--json", str(work / "warm.json"))
    report = json.loads((work / "warm.json").read_text())
    print(f"cache: cold run {cold:.1f} s; re-gate of the unchanged model {warm:.1f} s (whole command), of which reading "
          f"{report['n_members'] + report['n_nonmembers']} cached scores {report['attacks']['naa']['seconds']:.2f} s; cached = {report['attacks']['naa']['cached']}")

    baseline = None
    runs = [(int(n), 1) for n in args.nproc.split(",")]
    runs.insert(1, (1, 2))
    for nproc, threads in runs:
        out = work / f"nproc{nproc}-t{threads}.json"
        wall, _ = naa_guard("audit", str(policy), "--quiet", "--nproc", str(nproc), "--json", str(out), threads=threads)
        scoring = json.loads(out.read_text())["attacks"]["naa"]["seconds"]
        baseline = baseline or scoring
        print(f"nproc {nproc} x {threads} thread(s): command {wall:6.1f} s, NAA scoring {scoring:6.1f} s, speed-up {baseline / scoring:4.2f}x vs nproc 1 x 1 thread")


if __name__ == "__main__":
    main()
