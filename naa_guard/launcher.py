"""``naa-guard audit --nproc N``: torchrun started, watched and stopped on this machine's behalf.

The launcher starts torchrun (which starts the ranks) and waits for rank 0's result file. It
owns what it started: SIGINT or SIGTERM sent to the launcher is forwarded to torchrun, the ranks
get SIGTERM, and the launcher returns (then acts on the signal as it would have) only once none
of them runs any more; whatever still runs after a grace period is killed. A rank therefore never
writes an output after its launcher is gone (on Linux, torchrun also gets SIGTERM if the launcher
itself is killed outright). A run that leaves no result is a DistributedError in one line that
names the rank that failed, its exit code (or the signal that killed it) and its last error, read
from torchrun's report, and the file that holds the ranks' log (:mod:`naa_guard.scoring.ranklog`); a
SIGTERM sent to the launcher ends in one such line too. No traceback reaches the terminal.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from naa_guard.errors import DistributedError

if TYPE_CHECKING:
    from naa_guard.errors import NaaGuardError
    from naa_guard.scoring.ranklog import RankLog
    from naa_guard.result import AuditResult

RESULT_FILE = "outcome.pickle"
GRACE_SECONDS = 60.0  # torchrun gives its ranks 30 s after SIGTERM before SIGKILL; then we kill what is left
_GLOG = re.compile(r"^[IWEF]\d{4} ")  # torchrun's own log lines
_ERROR_LINE = re.compile(r"^(?:\[\w+\]:)?(naa-guard: .+|[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$")


@dataclass(frozen=True)
class Outcome:
    """What rank 0 hands back to a launcher: the exit code, and the result or the error."""

    code: int
    result: AuditResult | None = None
    error: NaaGuardError | None = None



def torchrun_command(nproc: int, cli_args: Sequence[str]) -> list[str]:
    """Return the command that runs ``naa-guard CLI_ARGS`` on ``nproc`` local ranks, with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "naa_guard", *cli_args]


def launch_warnings(nproc: int, device: str) -> list[str]:
    """Return warnings about ``nproc`` ranks on this machine: more than its GPUs (a CUDA device) or its CPU cores."""
    if device == "auto" or device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            if nproc > gpus:
                return [f"--nproc {nproc} asks for more ranks than the {gpus} GPU(s) here; each rank uses cuda:LOCAL_RANK, so ranks {gpus}..{nproc - 1} cannot start. Use --nproc {gpus} or fewer."]
            return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if nproc > cores:
        return [f"--nproc {nproc} starts more ranks than the {cores} CPU core(s) this process may use; they compete for them (slower, same scores). Use --nproc {cores} or fewer."]
    return []


def launch(nproc: int, cli_args: Sequence[str], *, capture: bool = False) -> tuple[Outcome, str]:
    """Return rank 0's outcome of ``naa-guard CLI_ARGS`` run under torchrun, and the captured output.

    Everything torchrun and the ranks write to stderr goes to a log file (:mod:`naa_guard.scoring.ranklog`);
    ``capture=False`` also passes the ranks' output through to this process's, less tracebacks and
    torchrun's own log lines. A run that leaves no result file (a rank crashed or was killed,
    torchrun refused to start) is a DistributedError in one line naming the rank and the log file,
    never a pass. A SIGTERM to this process stops the ranks and ends in one such line too.
    """
    from naa_guard.scoring.ranklog import RankLog

    interrupted: list[int] = []
    log = RankLog()
    with tempfile.TemporaryDirectory(prefix="naa-guard-") as folder:
        result_file = Path(folder) / RESULT_FILE
        command = [*torchrun_command(nproc, cli_args), "--result-file", str(result_file)]
        try:
            process = subprocess.Popen(
                command, stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE, text=True, errors="replace",
                start_new_session=True, preexec_fn=_parent_death_signal(),  # our signals, not the terminal's, stop it
            )  # fmt: skip
        except BaseException:
            log.close(keep=False)
            raise
        stderr: collections.deque[str] = collections.deque(maxlen=400)
        stdout: list[str] = []
        readers = [_reader(process.stderr, stderr, None if capture else sys.stderr, log)]
        if process.stdout is not None:
            readers.append(_reader(process.stdout, stdout, None))
        with _forwarding_signals(process, interrupted):
            code = _wait(process, interrupted)
        for reader in readers:
            reader.join(timeout=10)
        output = "".join(stdout) + "".join(stderr)
        outcome = pickle.loads(result_file.read_bytes()) if result_file.is_file() and not interrupted else None
    kept = log.close(keep=outcome is None)
    if interrupted:  # the ranks are gone: now act on the signal as this process would have
        if interrupted[0] != signal.SIGINT:  # Ctrl-C: the command line says "interrupted; no verdict"
            print(f"naa-guard: {stopped_message(nproc, interrupted[0], kept)}", file=sys.stderr, flush=True)
        signal.raise_signal(interrupted[0])
        raise KeyboardInterrupt  # a handler that returned (e.g. SIGTERM ignored by the caller): still no verdict
    if outcome is None:
        raise DistributedError(failure_message(nproc, code, list(stderr), kept))
    # Written by rank 0 of the run just started, in a folder only this process knows.
    return outcome, output


def stopped_message(nproc: int, signum: int, log: Path | None) -> str:
    """Return the one line said when this launcher was sent ``signum`` and stopped the ranks."""
    return f"the distributed audit on {nproc} processes was stopped by {_signal_name(signum)} sent to naa-guard: ranks 0..{nproc - 1} were stopped before a result. No verdict{_log_note(log)}"


def _log_note(log: Path | None) -> str:
    return f"; the ranks' log: {log}" if log is not None else ""


def failure_message(nproc: int, code: int, lines: Sequence[str], log: Path | None = None) -> str:
    """Return one line saying which rank failed and why, from torchrun's report in its output."""
    lines = [line.rstrip("\n") for line in lines]
    root = next((i for i, line in enumerate(lines) if "Root Cause (first observed failure)" in line), None)
    fields: dict[str, str] = {}
    for line in lines[root + 1 :] if root is not None else []:
        name, _, value = line.strip().partition(":")
        if name.strip() in ("rank", "exitcode", "traceback") and name.strip() not in fields:
            fields[name.strip()] = value.strip()
        if line.startswith("=" * 20):
            break
    end = next((i for i, line in enumerate(lines) if "ChildFailedError" in line), len(lines))
    errors = [line.strip() for line in lines[:end] if _ERROR_LINE.match(line.strip()) and not _GLOG.match(line)]
    last_error = f"; its last error: {errors[-1]}" if errors else ""
    if "rank" in fields:
        rank = fields["rank"].split()[0]
        how = fields.get("exitcode", "?")
        detail = fields.get("traceback", "")
        detail = f" ({detail})" if detail and "To enable traceback" not in detail and "received by PID" not in detail else ""
        killed = re.match(r"-(\d+)\b", how)
        what = f"was killed by {_signal_name(int(killed.group(1)))} (exit code {how.split()[0]})" if killed else f"exited with code {how}"
        last_error = "" if killed else last_error  # a killed rank wrote nothing: the last error would be another rank's
        return f"the distributed audit on {nproc} processes failed: rank {rank} of {nproc} {what}{detail}{last_error}. No verdict{_log_note(log)}."
    tail = next((line.strip() for line in reversed(lines) if line.strip() and not _GLOG.match(line.strip())), "no output")
    return f"the distributed audit on {nproc} processes ended without a result (torchrun exit code {code}): a rank died or could not start; last output: {tail}{last_error}. No verdict{_log_note(log)}."


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _reader(stream: IO[str] | None, keep: collections.deque[str] | list[str], echo: IO[str] | None, log: RankLog | None = None) -> threading.Thread:
    def pump() -> None:
        for line in stream or ():
            keep.append(line)
            shown = log.write(line) if log is not None else True
            if echo is not None and shown:
                echo.write(line)
                echo.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _wait(process: subprocess.Popen[str], interrupted: list[int]) -> int:
    """Return torchrun's exit code; after a forwarded signal, kill it and its ranks if they outlast the grace period."""
    deadline = None
    while True:
        try:
            return process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if interrupted and deadline is None:
                deadline = time.monotonic() + GRACE_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                _signal_all([process.pid, *descendants(process.pid)], signal.SIGKILL)


class _forwarding_signals:
    """Within the block, SIGINT and SIGTERM go to torchrun (and SIGTERM to its ranks) instead of stopping this process."""

    def __init__(self, process: subprocess.Popen[str], interrupted: list[int]) -> None:
        self.process, self.interrupted = process, interrupted
        self.ranks: set[int] = set()
        self.previous: dict[int, object] = {}

    def _forward(self, signum: int, frame: object) -> None:
        self.interrupted.append(signum)
        self.ranks |= descendants(self.process.pid)  # before torchrun exits and its ranks lose their parent
        _signal_all([self.process.pid], signum)
        _signal_all(self.ranks, signal.SIGTERM)

    def __enter__(self) -> _forwarding_signals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self._forward) for signum in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        if self.interrupted or exc[0] is not None:  # leave nothing running: a rank that outlived torchrun is killed
            self.ranks |= descendants(self.process.pid)
            if self.process.poll() is None:
                _signal_all([self.process.pid], signal.SIGKILL)
                self.process.wait()
            _signal_all(self.ranks, signal.SIGKILL)
            _wait_gone(self.ranks)
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def descendants(pid: int) -> set[int]:
    """Return the ids of every process below ``pid`` (Linux /proc; empty where there is none)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc/self/stat").exists() else ():
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            children[int(fields[1])].append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while listed
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def running(pid: int) -> bool:
    """Return True while a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z" if Path("/proc/self/stat").exists() else True
    except (ProcessLookupError, FileNotFoundError):
        return False
    except (PermissionError, OSError, IndexError):
        return True


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: Iterable[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _parent_death_signal() -> Callable[[], None] | None:
    """Return a pre-exec function that has the child get SIGTERM when this process dies (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, AttributeError):
        return None

    def set_death_signal() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_death_signal


def write_outcome(path: Path, outcome: Outcome) -> None:
    """Write rank 0's outcome for the launcher (atomically: a killed run leaves no file)."""
    from naa_guard.scoring.chunks import write_atomically

    # No parents made: a launcher that died took its folder with it, and nothing is written after it.
    write_atomically(Path(path), pickle.dumps(outcome), make_parents=False)
