"""Check an accelerator end to end: device auto, batch-size invariance, dtypes, all attacks.

    python benchmarks/device_check.py [--device auto]

Audits the committed overfit fixture (tests/fixtures/overfit_digits: 100 members / 300
non-members) with every attack, then re-scores NAA at several batch sizes and dtypes, and prints
AUCs, whether scores are identical across batch sizes, and the largest score difference to
float32. Prints figures; asserts nothing, so a regression shows as a changed number.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from naa_guard.audit import audit
from naa_guard.policy import parse_policy

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "overfit_digits"


def _policy(device: str, dtype: str, attacks: dict) -> object:
    raw = {
        "version": 1, "name": f"device-check-{dtype}",
        "model": {"path": str(FIXTURE / "model")},
        "data": {"members": str(FIXTURE / "members.npz"), "nonmembers": str(FIXTURE / "nonmembers.npz"), "control": str(FIXTURE / "control_a.npz")},
        "attacks": attacks, "thresholds": {"auc": 0.6, "tpr_at_1pct_fpr": None},
        "runtime": {"device": device, "dtype": dtype, "batch_size": 64, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, FIXTURE / "device-check.naa.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    naa = {"t": 40, "stride": 10, "noise": "scaled", "sigma": 0.1}
    every = {"naa": naa, "loss": {}, "secmi": {}, "pia": {}, "pian": {}, "sima": {}}

    started = time.perf_counter()
    result = audit(_policy(args.device, "float32", every), progress=False)
    print(f"device {result.device}: all attacks in {time.perf_counter() - started:.1f}s (model load included)")
    for name, attack in result.attacks.items():
        print(f"  {name:5s} AUC {attack.leakage.auc:.4f}  TPR@1%FPR {attack.leakage.metrics['tpr_at_1pct_fpr'].value:.3f}  {attack.seconds:.2f}s")
    print("  " + "; ".join(result.checks.summary_lines()) if result.checks is not None else "")

    policy = _policy(args.device, "float32", {"naa": naa})
    by_batch = {size: audit(policy, batch_size=size, progress=False).attacks["naa"] for size in (1, 7, 64, 256)}
    reference = by_batch[64]
    for size, attack in by_batch.items():
        same = np.array_equal(attack.member_scores, reference.member_scores) and np.array_equal(attack.nonmember_scores, reference.nonmember_scores)
        diff = max(np.abs(attack.member_scores - reference.member_scores).max(), np.abs(attack.nonmember_scores - reference.nonmember_scores).max())
        print(f"  naa batch {size:4d}: identical to batch 64 = {same}, max |diff| {diff:.3g}, AUC {attack.leakage.auc:.4f}")

    for dtype in ("float16", "bfloat16"):
        try:
            attack = audit(_policy(args.device, dtype, {"naa": naa, "pia": {}}), progress=False).attacks
        except Exception as exc:  # report and go on: this is a survey, not a test
            print(f"  {dtype}: {type(exc).__name__}: {exc}")
            continue
        diff = np.abs(attack["naa"].member_scores - reference.member_scores).max()
        print(f"  {dtype}: naa AUC {attack['naa'].leakage.auc:.4f} (float32 {reference.leakage.auc:.4f}, max |score diff| {diff:.3g}), pia AUC {attack['pia'].leakage.auc:.4f}")


if __name__ == "__main__":
    main()
