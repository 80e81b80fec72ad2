"""Fail fast across ranks: a rank that fails raises a flag that stops the other ranks' shares.

Every job a distributed audit runs has its own flag, a key in the process group's store
(``naa-guard/abort/JOB``): a later job never sees an earlier job's flag. A rank that fails while
running its share of a job raises the flag (its rank number is the value); every rank of that job
looks at it before each chunk and, through :func:`check` in the scoring loop, before each batch,
and stops its share with :class:`~naa_guard.errors.RankAborted` when it is up. Every rank then
goes on to the gather, where rank 0 reports the failed rank's own error (never the "aborted" of
the others) and gives no verdict.

Outside a distributed job's share (a single process, the model-free paths) :func:`check` does
nothing. torch.distributed is imported only by :func:`job_flag`, i.e. only in a process group.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from naa_guard.errors import RankAborted

PREFIX = "naa-guard/abort/"
CHECK_EVERY = 0.5  # seconds between two looks at the store by one rank: a stop comes within a batch and this


class AbortFlag:
    """One job's abort flag in the process group's store."""

    def __init__(self, store: Any, job: int, world_size: int) -> None:
        self.store, self.key, self.job, self.world_size = store, f"{PREFIX}{job}", job, world_size
        self._looked = -CHECK_EVERY  # when check() last asked the store (time.monotonic)

    def raise_flag(self, rank: int) -> None:
        """Tell every rank of this job that ``rank`` failed (the first rank to fail keeps the flag)."""
        self.store.compare_set(self.key, "", str(rank))

    def raised_by(self) -> int | None:
        """Return the rank that raised this job's flag, or None while it is down."""
        if not self.store.check([self.key]):
            return None
        return int(self.store.get(self.key).decode())

    def check(self) -> None:
        """Return None while the flag is down; raise RankAborted once another rank raised it.

        Asks the store at most every CHECK_EVERY seconds: fast batches on many ranks do not flood it.
        """
        now = time.monotonic()
        if now - self._looked < CHECK_EVERY:
            return
        self._looked = now
        failed = self.raised_by()
        if failed is not None:
            raise RankAborted(
                f"stopped its share of job {self.job} because rank {failed} of {self.world_size} failed; rank 0 reports that "
                f"rank's error and gives no verdict."
            )


def job_flag(job: int, world_size: int) -> AbortFlag | None:
    """Return the abort flag of job number ``job`` in this process group's store (None: no store to hold one).

    Without a store (no process group, or a torch without the default store) the ranks only learn of a failure at the
    gather, after their whole share: slower, never a different verdict.
    """
    import torch.distributed as dist
    from torch.distributed import distributed_c10d

    get_store = getattr(distributed_c10d, "_get_default_store", None)
    if get_store is None or not dist.is_initialized():
        return None
    return AbortFlag(get_store(), job, world_size)


_watched: AbortFlag | None = None  # the flag of the job this process runs a share of, if any


@contextmanager
def watching(flag: AbortFlag | None) -> Iterator[None]:
    """Within the block, :func:`check` looks at ``flag`` (this process runs a share of its job)."""
    global _watched
    previous, _watched = _watched, flag
    try:
        yield
    finally:
        _watched = previous


def check() -> None:
    """Raise RankAborted when another rank of the job this process runs a share of failed; else do nothing.

    A no-op in a single process. Called before each chunk and each batch of a distributed share.
    """
    if _watched is not None:
        _watched.check()
