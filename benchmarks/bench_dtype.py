"""Leak AUC in half precision against float32 on the tiny SD fixture (issue 18 item 5).

    python benchmarks/bench_dtype.py [--device cpu] [--dtypes float32,bfloat16,float16] [--limit 0]

Audits tests/fixtures/tiny_sd/model (members v nonmembers, 40 v 40, true captions) with the
attacks ``naa-guard init`` writes (naa, sima, pia, loss at their defaults), seed 0, once per
dtype, and prints each attack's AUC and TPR@1%FPR, the AUC difference to float32 and the largest
score difference (in standard deviations of the float32 scores). ``--limit N`` audits the first N per side. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from naa_guard.audit import audit
from naa_guard.policy import parse_policy

SD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_sd"
ATTACKS = ("naa", "sima", "pia", "loss")


def _policy(device: str, dtype: str, limit: int) -> object:
    raw = {
        "version": 1, "name": f"dtype-{dtype}",
        "model": {"path": str(SD / "model")},
        "data": {"members": str(SD / "members.csv"), "nonmembers": str(SD / "nonmembers.csv"), "conditioning": "caption", **({"limit": limit} if limit else {})},
        "attacks": {name: {} for name in ATTACKS},
        "thresholds": {"auc": 0.99, "tpr_at_1pct_fpr": None, "decision": "point"},
        "runtime": {"device": device, "dtype": dtype, "batch_size": 50, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, SD / "bench-dtype.naa.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--limit", type=int, default=0, help="samples per side (0: all 40)")
    args = parser.parse_args()
    import torch

    results = {}
    for dtype in args.dtypes.split(","):
        started = time.perf_counter()
        results[dtype] = audit(_policy(args.device, dtype, args.limit), progress=False).attacks
        members = len(results[dtype]["naa"].member_scores)
        print(f"{dtype}: {members} v {len(results[dtype]['naa'].nonmember_scores)}, {time.perf_counter() - started:.1f}s", flush=True)
    print(f"tiny SD fixture ({SD.relative_to(SD.parents[2])}), device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, seed 0")
    print(f"{'attack':6s} " + " ".join(f"{dtype + ' AUC':>14s}" for dtype in results) + "   (TPR@1%FPR)  AUC - float32, max |score - float32 score| / std of float32 scores")
    reference = results.get("float32")
    for name in ATTACKS:
        cells = [f"{results[dtype][name].leakage.auc:14.4f}" for dtype in results]
        tprs = ", ".join(f"{results[dtype][name].leakage.metrics['tpr_at_1pct_fpr'].value:.3f}" for dtype in results)
        diffs = ""
        if reference is not None:
            base = reference[name]
            for dtype, attacks in results.items():
                if dtype == "float32":
                    continue
                auc = attacks[name].leakage.auc - base.leakage.auc
                delta = np.concatenate([attacks[name].member_scores - base.member_scores, attacks[name].nonmember_scores - base.nonmember_scores])
                spread = np.concatenate([base.member_scores, base.nonmember_scores]).std()
                diffs += f"  {dtype} {auc:+.4f}, {np.abs(delta).max() / spread:.3g}"
        print(f"{name:6s} " + " ".join(cells) + f"   ({tprs}){diffs}")


if __name__ == "__main__":
    main()
