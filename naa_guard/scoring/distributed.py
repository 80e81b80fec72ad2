"""Distributed audits on torch.distributed: the ranks of a process group share every set's chunks.

Start one with torchrun (``torchrun --nproc-per-node N -m naa_guard audit POLICY``; multi-node
through torchrun's rendezvous flags) or let ``naa-guard audit --nproc N`` start torchrun for you
(:mod:`naa_guard.launcher`).
Each rank scores on its own device (``cuda:LOCAL_RANK`` when CUDA is there, else the CPU).

Rank 0 runs the audit as a single process would: listing, checks, cache lookups, tuning, metrics,
gates, reports and the exit code. Whenever it has chunks to run (digests for the checks, scores
for an attack) it broadcasts the job (sample sets travel as file lists, never as images); rank
``r`` runs the chunks ``j`` with ``j % world_size == r`` (a static, deterministic split by sample
position, which fixes every sample's key and so its noise); the results are gathered on rank 0 in
chunk order, so scores are the same whatever the number of processes. Every job carries rank 0's
digests of its inputs (the naa-guard code, the model files, each set's sample files): a rank that
sees other files at the same paths (a node with another checkout or copy) refuses to run its share,
and rank 0 checks that every chunk came back with one result per sample. A rank that fails sends
its error instead: rank 0 raises it as the audit's error, naming the rank, and never gates on
part of the scores. A failing rank also raises the job's abort flag (:mod:`naa_guard.scoring.abort`),
which every rank looks at before each chunk and each batch: the others stop their share within a
batch and go to the gather, so a failure ends the job in seconds, not when the slowest share is
done. When rank 0 is done it broadcasts the exit code, and every rank exits with it.
Nothing here schedules work dynamically: torch.distributed only moves jobs and results.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard import errors
from naa_guard.errors import DistributedError, NaaGuardError, RankAborted
from naa_guard.samples import reuse_file_digests
from naa_guard.scoring import abort

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.samples import SampleSet
    from naa_guard.scoring.models import ModelSource
    from naa_guard.scoring.runner import Chunk, ChunkJob

# Rank 0 waits in a collective while the other ranks score their share of a job: long jobs are normal.
TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Group:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int


def launched_by_torchrun() -> bool:
    """Return True when this process is one of several ranks started by torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join() -> Group:
    """Return this rank's place after joining the process group (nccl with CUDA, else gloo)."""
    import torch
    import torch.distributed as dist

    _bind_no_group_at_import()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    except Exception as exc:  # rendezvous and backend failures come as many types
        raise DistributedError(
            f"this process (RANK {os.environ.get('RANK')}, WORLD_SIZE {os.environ.get('WORLD_SIZE')}) could not join "
            f"the {backend} process group: {type(exc).__name__}: {exc}. Check torchrun's rendezvous flags "
            f"(--nnodes, --node-rank, --rdzv-endpoint or --master-addr/--master-port)."
        ) from None
    return Group(dist.get_rank(), dist.get_world_size(), local_rank)


def _bind_no_group_at_import() -> None:
    """Import, before the process group exists, the torch modules that bind ``group.WORLD`` at import time.

    ``torch.distributed.nn.functional`` defines its collectives with ``group=group.WORLD`` as a
    default argument. Imported after ``init_process_group`` (loading a diffusers model imports it,
    through torch._dynamo and FSDP), those defaults keep the world group alive after
    ``destroy_process_group``: its gloo threads then still run at interpreter exit, and a rank
    could abort there (``terminate called without an active exception``, SIGABRT) after its
    verdict. Imported first, the defaults hold None.
    """
    import torch.distributed.nn.functional  # noqa: F401


def leave() -> None:
    """Leave the process group: destroy it, so that its backend's threads end before this process does."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def backend_threads() -> list[str]:
    """Return the names of this process's threads that belong to a process group's backend (Linux /proc; else empty).

    Empty after :func:`leave` when nothing kept the group alive (see :func:`_bind_no_group_at_import`).
    """
    names = []
    for task in Path("/proc/self/task").glob("[0-9]*"):
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # a thread that ended while listed
        if name.startswith(("gloo", "pt_gloo", "pt_nccl", "pt_", "nccl")):
            names.append(name)
    return sorted(names)


def rank_device(requested: str, local_rank: int) -> str:
    """Return this rank's device for a requested one: ``cuda:LOCAL_RANK`` for auto/cuda when CUDA is there."""
    import torch

    if requested in ("auto", "cuda") or requested.startswith("cuda:"):
        if torch.cuda.is_available():
            return f"cuda:{local_rank}"
        if requested == "auto":
            return "cpu"
    return requested  # cpu, mps, or a CUDA request that resolve_device will refuse with its own message


def _broadcast(command: Any = None) -> Any:
    import torch.distributed as dist

    box = [command]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def input_digests(models: ModelSource, sets: dict[str, SampleSet]) -> dict[str, str]:
    """Return the digests of what a job's scores depend on that every rank reads from its own disk.

    The naa-guard code, the model's files (a custom loader: its loader and files) and each set's
    sample files; within one audit each list of files is read once (reuse_file_digests).
    """
    from naa_guard.samples import files_digest
    from naa_guard.scoring.keys import package_digest
    from naa_guard.targets.custom import loader_identity

    info, model = models.info, models.policy.model
    model_digest = files_digest(info.identity_files()) if info is not None else str(loader_identity(str(model.loader), model.path))
    return {"naa-guard code": package_digest(), "model files": model_digest, **{f"{role} files": files_digest(samples.files) for role, samples in sets.items()}}


def inputs_problem(mine: dict[str, str], rank0: dict[str, str], models: ModelSource, sets: dict[str, SampleSet]) -> str | None:
    """Return why this rank's inputs are not rank 0's (None: they are the same)."""
    differing = [name for name in rank0 if mine.get(name) != rank0[name]]
    if not differing:
        return None
    where = {"naa-guard code": "the installed naa_guard package", "model files": str(models.policy.model.path or models.policy.model.loader)}
    where |= {f"{role} files": str(samples.source) for role, samples in sets.items()}
    return (
        f"its inputs differ from rank 0's: {', '.join(f'{name} ({where.get(name, name)})' for name in differing)} have other contents "
        f"on this node. Every rank must read the same files at the same paths; a node with another checkout or copy would score "
        f"other data. Fix: sync the model, the data and the naa-guard install on every node, then rerun."
    )


def _run_share(job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, group: Group, rank0_inputs: dict[str, str], number: int) -> list[tuple[int, bool, Any]]:
    """Return (chunk number, ok, result or (error type, message)) for this rank's chunks; stop at a failure.

    A rank other than 0 first checks that its inputs are rank 0's; if not, it runs nothing and reports that.
    A failure raises the abort flag of job ``number``; a rank that sees it up (before a chunk or a
    batch) stops its share and reports RankAborted.
    """
    flag = abort.job_flag(number, group.world_size)
    with abort.watching(flag):
        if group.rank != 0:
            sets = getattr(job, "sets", {})
            try:
                problem = inputs_problem(input_digests(models, sets), rank0_inputs, models, sets)
            except Exception as exc:  # a file rank 0 read is missing here: that is a difference too
                problem = f"its inputs could not be read as rank 0 read them: {type(exc).__name__}: {exc}"
            if problem is not None:
                _raise_flag(flag, group.rank)
                return [(-1, False, ("DistributedError", problem))]
        done = []
        for chunk in range(group.rank, len(chunks), group.world_size):
            try:
                abort.check()
                done.append((chunk, True, job.run(models, *chunks[chunk])))
            except RankAborted as exc:  # another rank failed: stop here, rank 0 reports that rank's error
                done.append((chunk, False, (type(exc).__name__, str(exc))))
                break
            except Exception as exc:  # any failure: sent to rank 0, which fails the audit with it
                _raise_flag(flag, group.rank)
                done.append((chunk, False, (type(exc).__name__, str(exc))))
                break
    return done


def _raise_flag(flag: abort.AbortFlag | None, rank: int) -> None:
    if flag is not None:
        flag.raise_flag(rank)


def first_failure(gathered: Sequence[Sequence[tuple[int, bool, Any]]]) -> tuple[int, tuple[str, str]] | None:
    """Return (rank, (error type, message)) of the failure rank 0 reports: a rank's own error before any RankAborted."""
    failures = [(rank, value) for rank, share in enumerate(gathered) for _, ok, value in share if not ok]
    own = [(rank, value) for rank, value in failures if value[0] != RankAborted.__name__]
    return (own or failures or [None])[0]


def rank_error(rank: int, world_size: int, kind: str, message: str) -> NaaGuardError:
    """Return the error a failed rank reported, as the same naa-guard error type where it is one."""
    error_type = getattr(errors, kind, None)
    if isinstance(error_type, type) and issubclass(error_type, NaaGuardError):
        return error_type(f"rank {rank} of {world_size}: {message}")
    return DistributedError(f"rank {rank} of {world_size} failed with {kind}: {message}")


class DistributedRunner:
    """Rank 0's chunk runner: every rank runs its share of a job; results are gathered here."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.jobs = 0  # jobs broadcast so far; the number names a job's abort flag

    def run(self, job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, progress: Any = None) -> list[Any]:
        """Return ``job.run`` of every chunk, in order; raise the first failed rank's error."""
        import torch.distributed as dist

        inputs = input_digests(models, getattr(job, "sets", {}))
        self.jobs += 1  # each job its own abort flag: a later job never sees an earlier one's
        _broadcast(("run", job, list(chunks), models.policy, inputs, self.jobs))
        mine = _run_share(job, chunks, models, self.group, inputs, self.jobs)
        gathered: list[Any] = [None] * self.group.world_size
        dist.gather_object(mine, gathered, dst=0)
        failure = first_failure(gathered)
        if failure is not None:
            raise rank_error(failure[0], self.group.world_size, *failure[1])
        results: list[Any] = [None] * len(chunks)
        returned = [False] * len(chunks)
        for rank, share in enumerate(gathered):
            for number, _, value in share:
                role, start, stop = chunks[number]
                if job.result_length(value) != stop - start:
                    raise DistributedError(
                        f"rank {rank} of {self.group.world_size} returned {job.result_length(value)} results for the chunk {role} "
                        f"{start}..{stop} of {stop - start} samples; no verdict is given on part of the scores. Check that every "
                        f"rank runs the same naa-guard version."
                    )
                results[number], returned[number] = value, True
        if not all(returned):
            missing = [chunks[number] for number, done in enumerate(returned) if not done]
            raise DistributedError(f"no rank returned the chunk(s) {missing[:3]} of {len(chunks)}; no verdict is given on part of the scores.")
        if progress is not None:
            progress.update(sum(stop - start for _, start, stop in chunks))
        return results

    def finish(self, code: int) -> None:
        """Tell every other rank that the audit is over, and the exit code."""
        _broadcast(("stop", code))


def serve(group: Group) -> int:
    """Run the jobs rank 0 broadcasts until it says stop; return the exit code it sends."""
    import torch.distributed as dist

    from naa_guard.scoring.models import model_source

    sources: dict[str, ModelSource] = {}  # by model section: the model and, with model.reference, the reference
    with reuse_file_digests():  # one audit: each list of files is hashed once, as on rank 0
        while True:
            command = _broadcast()
            if command[0] == "stop":
                return int(command[1])
            _, job, chunks, policy, inputs, number = command
            which = policy.model.model_dump_json()
            if which not in sources:
                sources[which] = model_source(_on_this_rank(policy, group))
            dist.gather_object(_run_share(job, chunks, sources[which], group, inputs, number), None, dst=0)


def _on_this_rank(policy: Policy, group: Group) -> Policy:
    """Return rank 0's effective policy with this rank's device (same kind, own local index)."""
    device = policy.runtime.device
    local = f"cuda:{group.local_rank}" if device.startswith("cuda") else device
    return policy.model_copy(update={"runtime": policy.runtime.model_copy(update={"device": local})})


def lead(group: Group, body: Callable[[DistributedRunner], int]) -> int:
    """Return rank 0's exit code from ``body``; every other rank is told it, even if ``body`` raises."""
    runner = DistributedRunner(group)
    code = 2
    try:
        code = body(runner)
    finally:
        runner.finish(code)
    return code
