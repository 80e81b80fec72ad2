"""The --nproc launcher: it stops what it started, names a failed rank in one line, and warns about too many ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_tiny_setup

from naa_guard import launcher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _ranks_logs_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without a result keeps its ranks' log in the temp folder: the subprocesses' is this test's own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))

# torchrun's report when rank 1 raised (torch 2.x), as it prints it after the ranks' own output.
TORCHRUN_REPORT = """\
Traceback (most recent call last):
  File "/x/boom.py", line 3, in <module>
    raise ValueError("boom on rank one")
ValueError: boom on rank one
W1204 04:58:44.170000 12234 site-packages/torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 12339 closing signal SIGTERM
E1204 04:58:44.172000 12234 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: 1) local_rank: 1 (pid: 12340)
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
torch.distributed.elastic.multiprocessing.errors.ChildFailedError: 
============================================================
naa_guard FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 12339)  (SIGTERM)
  traceback : Signal 15 (SIGTERM) received by PID 12339
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_04:58:44
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 12340)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}


def test_torchruns_report_becomes_one_line_naming_the_root_cause_rank() -> None:
    message = launcher.failure_message(2, 1, TORCHRUN_REPORT.splitlines(keepends=True), Path("/tmp/naa-guard-ranks-x.log"))
    assert "\n" not in message and message.endswith("No verdict; the ranks' log: /tmp/naa-guard-ranks-x.log.")
    assert "rank 1 of 2 exited with code 1 (pid: 12340)" in message and "its last error: ValueError: boom on rank one" in message


def test_the_terminal_gets_no_traceback_nor_torchrun_report_and_the_log_keeps_every_line(tmp_path: Path) -> None:
    from naa_guard.scoring.ranklog import RankLog

    log = RankLog(tmp_path)
    lines = ["naa-guard: warning: a skipped file\n", *TORCHRUN_REPORT.splitlines(keepends=True), "[rank0]: Traceback (most recent call last):\n",
             '[rank0]:   File "x.py", line 1, in <module>\n', "[rank0]: RuntimeError: Connection closed by peer\n", "tiny: naa: 100%\n"]  # fmt: skip
    shown = [line for line in lines if log.write(line)]
    assert shown == ["naa-guard: warning: a skipped file\n", "tiny: naa: 100%\n"]
    kept = log.close(keep=True)
    assert kept is not None and kept.read_text() == "".join(lines)
    second = RankLog(tmp_path)
    assert second.close(keep=False) is None and not second.path.exists()  # a run with a result leaves no log


def test_a_failing_rank_is_named_in_one_line(tmp_path: Path) -> None:
    """Rank 1 crashes outside naa-guard's own error handling (LOCAL_RANK made unreadable in that rank only)."""
    policy = make_tiny_setup(tmp_path)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text('import os\nif os.environ.get("RANK") == "1":\n    os.environ["LOCAL_RANK"] = "not-a-number"\n')
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hooks"), env["PYTHONPATH"]])
    finished = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2"],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)  # fmt: skip
    assert finished.returncode == 2, finished.stdout + finished.stderr
    last = finished.stderr.strip().splitlines()[-1]
    assert last.startswith("naa-guard: DistributedError: the distributed audit on 2 processes failed: rank 1 of 2 exited with code 1"), finished.stderr
    assert "ValueError: invalid literal for int()" in last
    assert "verdict:" not in finished.stdout


def test_a_launcher_sent_sigterm_leaves_no_rank_and_no_output(tmp_path: Path) -> None:
    """And says so in one naa-guard line naming the ranks' log, with no traceback (naa-guard's or torchrun's)."""
    policy = make_tiny_setup(tmp_path, attacks="{naa: {t: 90, queries: 10}}", members=400, nonmembers=400, batch_size=4)
    report = tmp_path / "report.json"
    terminal = (tmp_path / "stderr.txt").open("w")
    launched = subprocess.Popen([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2", "--json", str(report)],
                                cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=terminal)  # fmt: skip
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and launched.poll() is None:
            started |= launcher.descendants(launched.pid)
            ranks = [pid for pid in started if _is_rank(pid)]
            if len(ranks) == 2:
                break
            time.sleep(0.05)
        assert len([pid for pid in started if _is_rank(pid)]) == 2, "the ranks did not start"
        time.sleep(2)  # the ranks are importing, joining the group or scoring
        launched.send_signal(signal.SIGTERM)
        assert launched.wait(timeout=120) != 0
        left = [pid for pid in started if launcher.running(pid)]
        assert not left, f"processes still running after the launcher ended: {left}"
        time.sleep(1)
        assert not report.exists()
        _assert_one_line_naming_the_log((tmp_path / "stderr.txt").read_text(), "stopped by SIGTERM sent to naa-guard")
    finally:
        terminal.close()
        launched.kill()
        for pid in started:
            if launcher.running(pid):
                os.kill(pid, signal.SIGKILL)


def _assert_one_line_naming_the_log(stderr: str, what: str) -> None:
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("naa-guard: ")]
    assert len(said) == 1 and said[0] == lines[-1], stderr
    assert what in said[0] and "No verdict; the ranks' log: " in said[0], said[0]
    log = Path(said[0].rsplit("the ranks' log: ", 1)[1].rstrip("."))
    assert log.is_file()
    log.unlink()


# Loaded by every Python process with its folder on PYTHONPATH: rank 1 kills itself (SIGKILL) in its first batch.
RANK_1_KILLS_ITSELF = """
import os, signal
if os.environ.get("RANK") == "1":
    from naa_guard.attacks import ATTACKS
    def score(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    ATTACKS["naa"].score = score
"""


def test_a_rank_killed_by_sigkill_ends_in_one_line_naming_it_and_the_log(tmp_path: Path) -> None:
    policy = make_tiny_setup(tmp_path, batch_size=4)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "sitecustomize.py").write_text(RANK_1_KILLS_ITSELF)
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "hooks"), env["PYTHONPATH"]])
    finished = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2"],
                              capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=300)  # fmt: skip
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "verdict" not in finished.stdout
    _assert_one_line_naming_the_log(finished.stderr, "rank 1 of 2 was killed by SIGKILL (exit code -9)")


def _is_rank(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"naa_guard" in command and b"torch.distributed.run" not in command


def test_more_ranks_than_cores_or_gpus_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launcher.launch_warnings(2, "cpu") == []
    (cores,) = launcher.launch_warnings(3, "auto")
    assert "more ranks than the 2 CPU core(s)" in cores and "--nproc 2" in cores
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    (gpus,) = launcher.launch_warnings(2, "cuda")
    assert "more ranks than the 1 GPU(s)" in gpus and "ranks 1..1 cannot start" in gpus
    assert launcher.launch_warnings(1, "cuda") == []


def test_the_pytest_face_warns_of_more_ranks_than_cores_as_the_cli_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--naa-nproc beyond the cores gets the CLI's warning, in the audit's warnings (summary, JUnit, report)."""
    from types import SimpleNamespace

    from naa_guard.policy import load_policy
    from pytest_plugin.session import AuditSession, Settings

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(launcher, "launch", lambda nproc, arguments, capture=False: (SimpleNamespace(error=None, result=SimpleNamespace(warnings=[]), code=0), ""))
    settings = Settings(device="cpu", batch_size=None, quick=None, report_dir=None, strict=False, use_cache=False, nproc=3)
    result = AuditSession(settings, None)._run_distributed(load_policy(make_tiny_setup(tmp_path)))
    assert len(result.warnings) == 1 and "3" in result.warnings[0] and "core" in result.warnings[0]


def _refused_policy(root: Path, case: str) -> Path:
    if case == "too few members":
        return make_tiny_setup(root, members=5)
    if case == "unresolvable gate":
        return make_tiny_setup(root, thresholds="{auc: 0.99, tpr_at_1pct_fpr: 0.1}")
    policy = make_tiny_setup(root)
    if case == "missing set":
        (root / "members.npz").unlink()
    elif case == "model folder without a model":
        for path in sorted((root / "model").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    elif case == "captions for a model without text":
        policy.write_text(policy.read_text().replace("nonmembers: ./nonmembers.npz}", "nonmembers: ./nonmembers.npz, conditioning: caption}"))
    return policy


@pytest.mark.parametrize("case", ["too few members", "unresolvable gate", "missing set", "model folder without a model", "captions for a model without text"])
def test_a_refusal_that_needs_no_model_is_said_before_torchrun_starts(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--nproc 4 refuses as one process does, in the launcher: no rank starts (--nproc 64 took 74 s to say it)."""
    from naa_guard.cli import main

    policy = _refused_policy(tmp_path, case)
    assert main(["audit", str(policy), "--quiet"]) == 2
    alone = capsys.readouterr().err
    started: list[int] = []

    def no_torchrun(nproc: int, arguments: list[str], capture: bool = False) -> None:
        started.append(nproc)
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(launcher, "launch", no_torchrun)
    assert main(["audit", str(policy), "--quiet", "--nproc", "4"]) == 2
    assert started == [] and capsys.readouterr().err == alone  # the same one-line refusal


def test_a_launcher_loads_no_model_and_then_starts_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy the checks accept is the ranks' work: the launcher hands it over without loading the model."""
    from types import SimpleNamespace

    from naa_guard.cli import main
    from naa_guard.scoring import models

    policy = make_tiny_setup(tmp_path)
    monkeypatch.setattr(models, "load_model", lambda *args: (_ for _ in ()).throw(AssertionError("the launcher loaded the model")))
    started: list[int] = []
    monkeypatch.setattr(launcher, "launch", lambda nproc, arguments, capture=False: (started.append(nproc), (SimpleNamespace(code=0), ""))[1])
    assert main(["audit", str(policy), "--quiet", "--nproc", "4"]) == 0
    assert started == [4]


def test_the_pytest_face_refuses_before_torchrun_as_the_cli_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from naa_guard.errors import InsufficientSamplesError
    from naa_guard.policy import load_policy
    from pytest_plugin.session import AuditSession, Settings

    def no_torchrun(nproc: int, arguments: list[str], capture: bool = False) -> None:
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(launcher, "launch", no_torchrun)
    settings = Settings(device="cpu", batch_size=None, quick=None, report_dir=None, strict=False, use_cache=False, nproc=4)
    outcome = AuditSession(settings, None).outcome(load_policy(_refused_policy(tmp_path, "too few members")))
    assert isinstance(outcome, InsufficientSamplesError), outcome
