"""Measure how long the leakage metrics take (moved here from a wall-clock assert in the tests).

    python benchmarks/bench_metrics.py [--n 2000] [--bootstrap 1000] [--repeats 3]

Times ``naa_guard.verdict.leakage.evaluate`` (point metrics plus the stratified bootstrap) on n members
and n non-members with shifted normal scores, and prints the best of the repeats. Prints figures;
asserts nothing about speed, since that depends on the machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="members and non-members each")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from naa_guard.verdict.leakage import evaluate

    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0.1, 1, args.n), rng.normal(0, 1, args.n)
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        evaluate(members, nonmembers, n_bootstrap=args.bootstrap)
        timings.append(time.perf_counter() - started)
    print(f"evaluate {args.n}+{args.n} scores, {args.bootstrap} resamples: best {min(timings):.3f} s, median {sorted(timings)[len(timings) // 2]:.3f} s over {args.repeats} runs")


if __name__ == "__main__":
    main()
