"""Distributed audits (gloo on the CPU): 2 processes give what 1 gives (scores to float32 rounding); a failing rank fails all.

Each test starts real torchrun subprocesses (about 10 s each on 2 cores), so there are few of them.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_tiny_model, make_tiny_setup, write_policy
from PIL import Image
from tolerance import SAME_MACHINE, assert_scores_close

from naa_guard.cli import main

REPO = Path(__file__).resolve().parents[1]
RUN_DEPENDENT = ("seconds", "cached")  # wall time and cache state differ between runs, nothing else may


@pytest.fixture(autouse=True)
def _ranks_logs_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without a result keeps its ranks' log in the temp folder: the subprocesses' is this test's own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def _strip(report: dict) -> dict:
    for attack in report["attacks"].values():
        for key in RUN_DEPENDENT:
            attack.pop(key)
    return report


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def naa_guard_command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m naa_guard ARGS`` from the repository and return the finished process."""
    return subprocess.run([sys.executable, "-m", "naa_guard", *args], capture_output=True, text=True, cwd=REPO, env=_env(), check=False, timeout=300)


def _close(a: object, b: object, where: str = "report") -> list[str]:
    """Return where two JSON values differ beyond float32 reordering (tests/tolerance.py): numbers within 1e-5, the rest exactly."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [f"{where}.{key}: missing" for key in set(a) ^ set(b)] + [d for key in set(a) & set(b) for d in _close(a[key], b[key], f"{where}.{key}")]
    if isinstance(a, list) and isinstance(b, list):
        return [f"{where}: lengths {len(a)}, {len(b)}"] if len(a) != len(b) else [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=SAME_MACHINE, abs_tol=SAME_MACHINE) or (math.isnan(a) and math.isnan(b)) else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _scores_csv(path: Path) -> tuple[list[list[str]], dict[str, list[float]]]:
    """Return the rows of a --scores CSV without the score column, and the scores by attack."""
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    scores: dict[str, list[float]] = {}
    for row in rows:
        scores.setdefault(row[0], []).append(float(row[-1]))
    return [row[:-1] for row in rows], scores


def test_two_processes_give_the_scores_metrics_and_verdict_of_one(tmp_path: Path) -> None:
    """The same samples, noise and batches: the scores agree to float32 reordering (another process: tests/tolerance.py)."""
    policy = make_tiny_setup(tmp_path, attacks="{naa: {}, loss: {}, sima: {ts: [20, 100]}}", thresholds="{auc: 0.55, tpr_at_1pct_fpr: null, decision: point}", members=24, nonmembers=20)
    one = main(["audit", str(policy), "--quiet", "--scores", str(tmp_path / "one.csv"), "--json", str(tmp_path / "one.json"), "--batch-size", "5"])
    two = naa_guard_command("audit", str(policy), "--quiet", "--nproc", "2", "--chunk-size", "8", "--batch-size", "5",
                            "--scores", str(tmp_path / "two.csv"), "--json", str(tmp_path / "two.json"))  # fmt: skip
    assert one == two.returncode == 1, two.stdout + two.stderr  # the loss gate fails on this random model
    (one_rows, one_scores), (two_rows, two_scores) = _scores_csv(tmp_path / "one.csv"), _scores_csv(tmp_path / "two.csv")
    assert one_rows == two_rows  # every sample, in order, with its source
    for attack, scores in one_scores.items():
        assert_scores_close(two_scores[attack], scores, err_msg=attack)
    rows = (tmp_path / "one.csv").read_text().splitlines()
    assert rows[0] == "attack,role,index,source,score" and len(rows) == 1 + 3 * (24 + 20)
    assert rows[1].startswith(f"naa,members,0,{tmp_path / 'members.npz'}[0],")
    reports = [_strip(json.loads((tmp_path / f"{name}.json").read_text())) for name in ("one", "two")]
    assert _close(reports[0], reports[1]) == []
    assert "verdict: FAILED" in two.stdout and two.stdout.count("verdict:") == 1  # reported once, by rank 0


def test_a_rank_that_fails_makes_the_whole_audit_an_error_with_its_message(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")
    rng = np.random.default_rng(0)
    for role in ("members", "nonmembers"):
        (tmp_path / role).mkdir()
        for i in range(24):  # enough to gate on: fewer is refused in the launcher, before any rank starts
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype="uint8")).save(tmp_path / role / f"{i:02d}.png")
    # One chunk per set: the members' goes to rank 0, the non-members' to rank 1.
    (tmp_path / "nonmembers" / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    policy = write_policy(tmp_path / "p.naa.yaml", """
        version: 1
        model: {path: ./model}
        data: {members: ./members, nonmembers: ./nonmembers}
        attacks: {naa: {}}
        thresholds: {auc: 0.99, tpr_at_1pct_fpr: null}
        runtime: {device: cpu, batch_size: 4}
        """)  # fmt: skip
    finished = naa_guard_command("audit", str(policy), "--quiet", "--nproc", "2")
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "DataError: rank 1 of 2: Cannot decode image" in finished.stderr and "07.png" in finished.stderr
    assert "verdict" not in finished.stdout and "PASS" not in finished.stdout  # no partial verdict


def test_a_run_killed_mid_way_resumes_and_ends_with_the_scores_of_an_uninterrupted_run(tmp_path: Path) -> None:
    policy = make_tiny_setup(tmp_path, attacks="{naa: {t: 90, queries: 10}}", batch_size=4)
    cache = tmp_path / "cache"
    arguments = ["audit", str(policy), "--quiet", "--chunk-size", "4", "--cache", str(cache)]
    process = subprocess.Popen([sys.executable, "-m", "naa_guard", *arguments], cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(cache.rglob("*-*-*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = {path: path.stat().st_mtime_ns for path in cache.rglob("*-*-*.npz")}
    assert 0 < len(saved) < 12, "the run was not killed mid-way (12 chunks of 4)"

    assert main([*arguments, "--scores", str(tmp_path / "resumed.csv")]) == 0
    assert len(list(cache.rglob("*-*-*.npz"))) == 12
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in saved.items())  # the saved chunks were used, not rescored
    assert main(["audit", str(policy), "--quiet", "--scores", str(tmp_path / "uninterrupted.csv")]) == 0
    (resumed_rows, resumed), (whole_rows, whole) = _scores_csv(tmp_path / "resumed.csv"), _scores_csv(tmp_path / "uninterrupted.csv")
    assert resumed_rows == whole_rows
    assert_scores_close(resumed["naa"], whole["naa"])  # chunks scored by the killed process: another process


# Loaded by every Python process that has its folder on PYTHONPATH; acts only in torchrun's rank 1,
# which then reads the files named in NAA_TEST_OTHER_FILES from another place: a node whose checkout
# holds other files at the same paths.
OTHER_FILES_ON_RANK_1 = '''
import builtins, io, os
if os.environ.get("RANK") == "1" and os.environ.get("NAA_TEST_OTHER_FILES"):
    _other = dict(pair.split("=", 1) for pair in os.environ["NAA_TEST_OTHER_FILES"].split(os.pathsep))
    _open = builtins.open
    def _open_here(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            file = _other.get(os.fspath(file), file)
        return _open(file, *args, **kwargs)
    builtins.open = io.open = _open_here
'''


def test_a_rank_that_sees_other_sample_files_is_an_error_naming_it(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")
    rng = np.random.default_rng(0)
    for role in ("members", "nonmembers", "elsewhere"):
        (tmp_path / role).mkdir()
        for i in range(24):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype="uint8")).save(tmp_path / role / f"{i:02d}.png")
    policy = write_policy(tmp_path / "p.naa.yaml", """
        version: 1
        model: {path: ./model}
        data: {members: ./members, nonmembers: ./nonmembers}
        attacks: {naa: {}}
        thresholds: {auc: 0.99, tpr_at_1pct_fpr: null}
        runtime: {device: cpu, batch_size: 4}
        """)  # fmt: skip
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(OTHER_FILES_ON_RANK_1)
    # The non-members' chunk is rank 1's: today it would score another image than rank 0 listed.
    swapped = f"{tmp_path / 'nonmembers' / '03.png'}={tmp_path / 'elsewhere' / '03.png'}"
    env = {**_env(), "NAA_TEST_OTHER_FILES": swapped}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hooks"), env["PYTHONPATH"]])
    finished = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2"],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)  # fmt: skip
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "DistributedError: rank 1 of 2: its inputs differ from rank 0's: nonmembers files" in finished.stderr, finished.stderr
    assert "verdict" not in finished.stdout


def test_rank_0_refuses_a_chunk_result_of_the_wrong_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gather itself is faked (no process group): rank 1 sends 3 scores for its chunk of 4."""
    import torch.distributed as dist

    from naa_guard.errors import DistributedError
    from naa_guard.scoring import distributed

    class Job:
        sets: dict = {}

        def run(self, models: object, role: str, start: int, stop: int) -> np.ndarray:
            return np.zeros(stop - start)

        def result_length(self, result: np.ndarray) -> int:
            return len(result)

    def gather(mine: list, gathered: list, dst: int) -> None:
        gathered[:] = [mine, [(1, True, np.zeros(3))]]

    monkeypatch.setattr(distributed, "_broadcast", lambda command=None: command)
    monkeypatch.setattr(dist, "gather_object", gather)
    models = SimpleNamespace(info=None, policy=SimpleNamespace(model=SimpleNamespace(loader="module:load", path=None)))
    runner = distributed.DistributedRunner(distributed.Group(rank=0, world_size=2, local_rank=0))
    with pytest.raises(DistributedError, match=r"rank 1 of 2 returned 3 results for the chunk members 4\.\.8 of 4 samples"):
        runner.run(Job(), [("members", 0, 4), ("members", 4, 8)], models)  # type: ignore[arg-type]


# Loaded by every Python process that has its folder on PYTHONPATH; in torchrun's ranks it writes,
# at interpreter exit (after naa-guard left the process group, before C++ teardown), the threads
# still running there.
THREADS_AT_EXIT = '''
import atexit, os
if os.environ.get("RANK") is not None and os.environ.get("NAA_TEST_THREADS"):
    def _threads_at_exit():
        names = []
        for task in os.listdir("/proc/self/task"):
            try:
                names.append(open(f"/proc/self/task/{task}/comm").read().strip())
            except OSError:
                pass
        with open(os.environ["NAA_TEST_THREADS"] + "." + os.environ["RANK"], "w") as stream:
            stream.write("\\n".join(sorted(names)))
    atexit.register(_threads_at_exit)
'''


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through Linux /proc")
def test_every_rank_leaves_the_group_with_no_backend_thread_running_at_exit(tmp_path: Path) -> None:
    """A rank whose gloo threads still run at interpreter exit may abort there (SIGABRT, "terminate called
    without an active exception") after the verdict: loading the model imports torch.distributed.nn, whose
    collectives bind the world group as a default argument, so destroying the group did not end its threads."""
    policy = make_tiny_setup(tmp_path)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(THREADS_AT_EXIT)
    env = {**_env(), "NAA_TEST_THREADS": str(tmp_path / "threads")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hooks"), env["PYTHONPATH"]])
    finished = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2"],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for rank in (0, 1):
        threads = (tmp_path / f"threads.{rank}").read_text().split()
        assert not [name for name in threads if "gloo" in name or name.startswith("pt_")], f"rank {rank}: {threads}"
    assert "terminate called" not in finished.stderr


def test_the_group_is_destroyed_with_its_threads_even_when_the_model_libraries_load_after_joining(tmp_path: Path) -> None:
    """One rank (a world of 1) joins, imports what loading a diffusers model imports, leaves: no backend thread is left."""
    script = (
        "import os, sys\n"
        "from naa_guard.scoring import distributed\n"
        "group = distributed.join()\n"
        "import diffusers, torch._dynamo  # what loading a model imports, after the group exists\n"
        "running = distributed.backend_threads()\n"
        "distributed.leave()\n"
        "print(bool(running), distributed.backend_threads())\n"
    )
    env = {**_env(), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split()[-2:] == ["True", "[]"], finished.stdout + finished.stderr
