"""Reproduce issue 20's table: what an AUC gate certifies at a given number of samples per side.

    python benchmarks/bench_certify.py [--trials 40] [--limit 0.60] [--leak 0.70] [--sizes 20 40 100 200 400]

For each size, with normal scores and naa_guard's own metrics code (``naa_guard.verdict.leakage.evaluate``,
1000 stratified bootstrap resamples, 95%):

- a model that does not leak (members and non-members from the same normal): the mean upper 95%
  bound of its leak AUC over the trials, beside the analytic figure the pre-flight check uses
  (``naa_guard.verdict.resolvable.null_auc_upper``);
- a model leaking at AUC ``--leak`` (members shifted by sqrt(2) * Phi^-1(leak)): the share of
  trials in which it passes the limit under ``decision: point`` and under ``decision: upper_ci``.

Seeded (trial i of size n uses seed [n, i]), so the table is the same on every machine.
"""

from __future__ import annotations

import argparse
import math
from statistics import NormalDist

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--limit", type=float, default=0.60)
    parser.add_argument("--leak", type=float, default=0.70, help="AUC of the leaking model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 40, 100, 200, 400])
    args = parser.parse_args()

    from naa_guard.verdict.leakage import evaluate
    from naa_guard.verdict.resolvable import null_auc_upper

    shift = math.sqrt(2.0) * NormalDist().inv_cdf(args.leak)
    print(f"AUC limit {args.limit}, {args.trials} trials per row, normal scores, 95% stratified bootstrap (1000 resamples)")
    print(f"{'per side':>8}  {'null: mean upper bound':>22}  {'analytic':>8}  {'leak ' + str(args.leak) + ' passes (point)':>26}  {'(upper_ci)':>10}")
    for n in args.sizes:
        uppers, point_passes, certified_passes = [], 0, 0
        for trial in range(args.trials):
            rng = np.random.default_rng([n, trial])
            null = evaluate(rng.normal(size=n), rng.normal(size=n), seed=trial).metrics["auc"]
            uppers.append(null.ci[1])
            leaking = evaluate(rng.normal(shift, 1.0, size=n), rng.normal(size=n), seed=trial).metrics["auc"]
            point_passes += leaking.value <= args.limit
            certified_passes += leaking.ci[1] <= args.limit
        print(
            f"{n:>8}  {np.mean(uppers):>22.3f}  {null_auc_upper(n, n, 0.95):>8.3f}  "
            f"{point_passes / args.trials:>25.0%}  {certified_passes / args.trials:>10.0%}"
        )


if __name__ == "__main__":
    main()
