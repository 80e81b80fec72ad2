"""The distributed path on a real NCCL process group: an audit through DistributedRunner, against one process.

    python benchmarks/nccl_check.py [--device cuda] [--chunk-samples 16]

Audits the tiny SD fixture (tests/fixtures/tiny_sd/model, members v nonmembers, 40 v 40, true
captions; naa and loss) twice: once in this process as ``naa-guard audit`` runs it (LocalRunner),
once as rank 0 of a process group joined through ``naa_guard.scoring.distributed.join`` (nccl when
CUDA is there, else gloo), with every chunk sent through ``DistributedRunner`` (jobs broadcast,
results gathered, exit code broadcast by ``lead``). The group has ONE rank: NCCL refuses two ranks
on the same GPU ("Duplicate GPU detected"), and the machine this is meant for has one. Prints the
backend, the world size, both runs' AUCs and whether every score is identical. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from naa_guard.audit import audit
from naa_guard.policy import parse_policy

SD = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny_sd"


def _policy(device: str) -> Any:
    raw = {
        "version": 1, "name": "nccl-check",
        "model": {"path": str(SD / "model")},
        "data": {"members": str(SD / "members.csv"), "nonmembers": str(SD / "nonmembers.csv"), "conditioning": "caption"},
        "attacks": {"naa": {}, "loss": {}},
        "thresholds": {"auc": 0.99, "tpr_at_1pct_fpr": None, "decision": "point"},
        "runtime": {"device": device, "batch_size": 16, "seed": 0},
    }  # fmt: skip
    return parse_policy(raw, SD / "nccl-check.naa.yaml")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--chunk-samples", type=int, default=16, help="samples per chunk: several jobs and chunks go through the runner")
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # diffusers' config deprecation notices
    import torch
    import torch.distributed as dist

    from naa_guard.scoring import distributed

    started = time.perf_counter()
    one = audit(_policy(args.device), progress=False, chunk_samples=args.chunk_samples).attacks
    print(f"single process ({args.device}): " + ", ".join(f"{name} AUC {attack.leakage.auc:.4f}" for name, attack in one.items()) + f"; {time.perf_counter() - started:.1f}s", flush=True)

    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})
    started = time.perf_counter()
    group = distributed.join()
    backend = dist.get_backend()
    print(f"joined: backend {backend}, rank {group.rank} of {group.world_size}, local rank {group.local_rank}; torch {torch.__version__}" + (f", NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}" if backend == "nccl" else ""), flush=True)
    results: dict[str, Any] = {}

    def body(runner: distributed.DistributedRunner) -> int:
        device = distributed.rank_device(args.device, group.local_rank)
        results.update(audit(_policy(device), progress=False, runner=runner, chunk_samples=args.chunk_samples).attacks)
        return 0

    try:
        code = distributed.lead(group, body)
    finally:
        distributed.leave()
    print(f"distributed ({backend}, world size {group.world_size}): exit code {code}; " + ", ".join(f"{name} AUC {attack.leakage.auc:.4f}" for name, attack in results.items()) + f"; {time.perf_counter() - started:.1f}s", flush=True)
    for name, attack in one.items():
        other = results[name]
        same = np.array_equal(attack.member_scores, other.member_scores) and np.array_equal(attack.nonmember_scores, other.nonmember_scores)
        diff = max(np.abs(attack.member_scores - other.member_scores).max(), np.abs(attack.nonmember_scores - other.nonmember_scores).max())
        print(f"  {name}: scores identical to the single process = {same} (max |diff| {diff:.3g}, {len(attack.member_scores)} v {len(attack.nonmember_scores)})")
    print(f"NCCL CHECK backend {backend}: " + ("all scores identical" if all(np.array_equal(one[n].member_scores, results[n].member_scores) and np.array_equal(one[n].nonmember_scores, results[n].nonmember_scores) for n in one) else "scores DIFFER"), flush=True)


if __name__ == "__main__":
    main()
