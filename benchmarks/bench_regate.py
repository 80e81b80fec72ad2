"""Time a cold audit against a re-gate from a complete cache, CLI and pytest plugin (issue 19).

    python benchmarks/bench_regate.py POLICY [--rounds 5] [--no-plugin] [--bare-pytest]

Cold: ``naa-guard audit POLICY --cache DIR`` (and ``pytest POLICY``) with an empty cache each
round, so the model loads and every score is computed. Cached: the same command again on a cache
a first run filled, so every score is read back (no torch, no diffusers). Each a fresh process,
timed from outside; prints the median and every round side by side with the load average, and
the cached runs' median CPU time (user + system), which a busy machine inflates less than wall time.
``--bare-pytest`` adds a face ``pytest-bare``: the plugin with no other pytest plugin loaded
(PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, ``-p pytest_plugin.plugin``), which separates naa-guard's own
time from that of the environment's plugins (hypothesis, anyio, ... load on every pytest run).
Asserts nothing about speed, since that depends on the machine. For the demo policy, build the
demo first (``naa-guard demo --out DIR``) and pass ``DIR/demo.naa.yaml``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CPU_SECONDS: list[float] = []  # user + system time of each timed command, in order


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started, cpu = time.perf_counter(), _children_cpu()
    finished = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    CPU_SECONDS.append(_children_cpu() - cpu)
    if finished.returncode not in (0, 1):  # 1: a gate failed, as the demo's do
        raise SystemExit(f"{' '.join(command)} exited {finished.returncode}:\n{finished.stdout}\n{finished.stderr}")
    return seconds


def _commands(face: str, policy: Path, cache: Path) -> list[str]:
    if face == "cli":
        return [sys.executable, "-m", "naa_guard", "audit", str(policy), "--cache", str(cache / "chunks"), "--quiet", "--no-reports"]
    bare = ["-p", "pytest_plugin.plugin"] if face == "pytest-bare" else []
    return [sys.executable, "-m", "pytest", "-q", str(policy), "-o", f"cache_dir={cache / 'pytest'}", "-p", "no:randomly", *bare]


def _env(face: str) -> dict[str, str] | None:
    return {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"} if face == "pytest-bare" else None


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policy", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-plugin", action="store_true", help="time the CLI only")
    parser.add_argument("--bare-pytest", action="store_true", help="also time the plugin with no other pytest plugin loaded")
    args = parser.parse_args()
    policy = args.policy.resolve()
    faces = ["cli"] if args.no_plugin else ["cli", "pytest"] + (["pytest-bare"] if args.bare_pytest else [])
    print(f"policy {policy}, {args.rounds} rounds, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"load average at start: {_load()}")
    print("face        cold median  cached median  cached CPU  cold rounds / cached rounds")
    for face in faces:
        cold, cached = [], []
        with tempfile.TemporaryDirectory() as warm_root:
            warm = Path(warm_root)
            for _ in range(args.rounds):
                with tempfile.TemporaryDirectory() as empty:
                    cold.append(_timed(_commands(face, policy, Path(empty)), policy.parent, _env(face)))
            _timed(_commands(face, policy, warm), policy.parent, _env(face))  # fills the cache
            cached = [_timed(_commands(face, policy, warm), policy.parent, _env(face)) for _ in range(args.rounds)]
            cached_cpu = statistics.median(CPU_SECONDS[-args.rounds :])
        rounds = f"{', '.join(f'{s:.1f}' for s in cold)} / {', '.join(f'{s:.2f}' for s in cached)}"
        print(f"{face:<11} {statistics.median(cold):10.2f}s {statistics.median(cached):13.2f}s {cached_cpu:10.2f}s  {rounds}", flush=True)
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
