"""Fail fast across ranks (issue 18, item 4): a rank's error stops the other ranks within a batch.

Two gloo ranks under torchrun; an import hook slows one rank's attack down (SECONDS_PER_BATCH per
batch, one chunk of BATCHES batches: only the per-batch check can stop it) and makes the other
rank fail once the slow rank is inside its chunk. The audit must end long before the slow share
could have, with the failed rank's own error and no verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_tiny_setup

REPO = Path(__file__).resolve().parents[1]
BATCHES = 24  # per set: one chunk per set (batch size 1), the members' on rank 0, the non-members' on rank 1
SECONDS_PER_BATCH = 3.0  # the slow rank's share would take BATCHES * SECONDS_PER_BATCH = 72 s


@pytest.fixture(autouse=True)
def _ranks_logs_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without a result keeps its ranks' log in the temp folder: the subprocesses' is this test's own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))

# Loaded by every Python process with its folder on PYTHONPATH; acts only in torchrun's ranks.
SLOW_AND_FAILING_RANKS = '''
import os, time
if os.environ.get("RANK") is not None and os.environ.get("NAA_TEST_LOG"):
    from naa_guard.attacks import ATTACKS
    _attack = ATTACKS["naa"]
    _score = _attack.score
    _log = os.environ["NAA_TEST_LOG"]

    def score(self, *args, **kwargs):
        rank = os.environ["RANK"]
        if rank == os.environ["NAA_TEST_FAIL_RANK"]:
            deadline = time.time() + 120
            while not os.path.exists(_log + ".batches") and time.time() < deadline:
                time.sleep(0.05)  # fail only once the slow rank is inside its chunk
            with open(_log + ".failed", "w") as stream:
                stream.write(repr(time.time()))
            raise ValueError(f"injected failure on rank {rank}")
        with open(_log + ".batches", "a") as stream:
            stream.write("batch\\n")
        time.sleep(float(os.environ["NAA_TEST_SECONDS_PER_BATCH"]))
        return _score(self, *args, **kwargs)

    _attack.score = score
'''


@pytest.mark.parametrize("failing", [1, 0], ids=["rank 1 fails, rank 0 stops", "rank 0 fails, rank 1 stops"])
def test_a_rank_failure_stops_the_other_rank_within_a_batch(tmp_path: Path, failing: int) -> None:
    policy = make_tiny_setup(tmp_path, thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}", batch_size=1, members=BATCHES, nonmembers=BATCHES)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(SLOW_AND_FAILING_RANKS)
    log = tmp_path / "log"
    env = {**os.environ, "NAA_TEST_LOG": str(log), "NAA_TEST_FAIL_RANK": str(failing), "NAA_TEST_SECONDS_PER_BATCH": str(SECONDS_PER_BATCH), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "hooks"), str(REPO), os.environ.get("PYTHONPATH")]))
    finished = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2"],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=600)  # fmt: skip
    ended = time.time()
    assert finished.returncode == 2, finished.stdout + finished.stderr
    # rank 0 reports the failed rank's own error, never the other rank's "stopped", and no verdict
    assert f"DistributedError: rank {failing} of 2 failed with ValueError: injected failure on rank {failing}" in finished.stderr, finished.stderr
    assert "RankAborted" not in finished.stderr and "verdict" not in finished.stdout
    batches = len((log.parent / "log.batches").read_text().splitlines())
    seconds_after_error = ended - float((log.parent / "log.failed").read_text())
    planned = BATCHES * SECONDS_PER_BATCH
    print(f"the slow rank ran {batches} of its {BATCHES} batches; the audit ended {seconds_after_error:.1f} s after the error (its share: {planned:.0f} s)")
    # Stopped inside its one chunk (only the per-batch check can do that), a batch or two after the error.
    assert 1 <= batches <= 4, f"the slow rank ran {batches} of its {BATCHES} batches after the other rank failed"
    assert seconds_after_error < planned / 3, f"the audit ended {seconds_after_error:.1f} s after the error; the slow share was planned for {planned:.0f} s"


def test_each_job_has_its_own_flag_and_check_is_a_no_op_outside_a_share() -> None:
    """A later job never sees an earlier job's flag; the first rank to fail keeps it (a store in memory, no group)."""
    import torch.distributed as dist

    from naa_guard.errors import RankAborted
    from naa_guard.scoring import abort

    store = dist.HashStore()
    first, second = abort.AbortFlag(store, 1, 2), abort.AbortFlag(store, 2, 2)
    first.raise_flag(1)
    first.raise_flag(0)
    assert first.raised_by() == 1 and second.raised_by() is None
    abort.check()  # a single process: nothing watched, nothing raised
    with abort.watching(second):
        abort.check()  # the earlier job's flag does not stop this one
    with abort.watching(first), pytest.raises(RankAborted, match="because rank 1 of 2 failed"):
        abort.check()
    abort.check()


def test_rank_0_reports_the_failed_ranks_own_error_not_another_ranks_stop() -> None:
    from naa_guard.scoring.distributed import first_failure

    stopped = (0, False, ("RankAborted", "stopped its share of job 3 because rank 1 of 2 failed"))
    failed = (1, False, ("DataError", "Cannot decode image 07.png"))
    assert first_failure([[stopped], [failed]]) == (1, ("DataError", "Cannot decode image 07.png"))
    assert first_failure([[(0, True, None)], [(1, True, None)]]) is None
    assert first_failure([[stopped], []]) == (0, stopped[2])  # only a stop came back: still an error, never a verdict
