"""Transient memory of the metrics (bootstrap intervals and the epsilon bound) as the sets grow.

    python benchmarks/bench_bootstrap_memory.py [--sizes 250,1000,4000]

For each N, in a fresh process: N member and N non-member random scores, ``evaluate`` and
``epsilon_lower_bound`` once to warm up on 50 of each, then once on all of them with the RSS
sampled every 2 ms; prints the peak above the RSS before. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import os, sys, threading
import numpy as np
from naa_guard.verdict.epsilon import epsilon_lower_bound
from naa_guard.verdict.leakage import evaluate

page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
n = int(sys.argv[1])
rng = np.random.default_rng(0)
member, nonmember = rng.normal(size=n), rng.normal(size=n)
evaluate(member[:50], nonmember[:50], confidence=0.95, seed=0)
epsilon_lower_bound(member[:50], nonmember[:50], confidence=0.95, delta=1e-5)
peak = [rss()]
before, done = peak[0], threading.Event()
def sample():
    while not done.wait(0.002):
        peak[0] = max(peak[0], rss())
threading.Thread(target=sample, daemon=True).start()
evaluate(member, nonmember, confidence=0.95, seed=0)
epsilon_lower_bound(member, nonmember, confidence=0.95, delta=1e-5)
done.set()
print(f"N={n:6d} per side: RSS before {before:.0f} MiB, peak +{peak[0] - before:.0f} MiB")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="250,1000,4000", help="scores per side, comma-separated")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for size in args.sizes.split(","):
        print(subprocess.run([sys.executable, "-c", CHILD, size], env=env, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
