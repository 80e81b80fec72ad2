"""Check and re-gate here before starting torchrun: a refusal or ``--nproc N`` / ``--naa-nproc N`` with every score stored start no rank.

Every check that needs no model (the policy, the outputs, the baseline, the counts, the model
folder, the sets' listing and captions) runs in the launching process before torchrun starts, as
one process runs it: :func:`launcher_runner` stops the attempt at its first chunk job
(:class:`FirstJobStops`) when no score is stored, and :func:`model_stays_unloaded` keeps a custom
loader's model from loading here. A refusal is then said at once, not after N ranks started.

A distributed audit's rank 0 does what a single process does, with its chunk jobs spread over the
ranks. When every score is already in the chunk store, rank 0 would run no scoring job at all, so
the launching process runs the audit itself first, exactly as rank 0 would (same chunk store, same
options, rank 0's device): with :class:`StoredOnlyRunner`, chunk jobs that do not need the model
(the checks' digests of the images) run here, and the first chunk that needs the model raises
:class:`ModelNeeded`. The caller then drops everything this attempt did (nothing has been written or
printed yet) and starts torchrun, which runs the whole audit on its ranks.

A custom loader (``model.loader``) is loaded to learn the image geometry before any score is
looked up, so such an audit always starts torchrun, as does one without a chunk store or with an
empty one. A run that finds some chunks stored but not all pays for the attempt's pass over the
images (the checks' digests) before torchrun starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.scoring.modelguard import ModelNeeded
from naa_guard.targets.devicekind import device_type_without_torch

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.scoring.models import ModelSource
    from naa_guard.scoring.runner import Chunk, ChunkJob
    from naa_guard.targets import Target


class _NoModel:
    """A model source whose model cannot be loaded in this process: asking for it raises ModelNeeded."""

    def __init__(self, models: ModelSource) -> None:
        self._models = models

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)

    def target(self) -> Target:
        raise ModelNeeded(f"a chunk of {self._models.policy.name} needs the model")

    def encoder(self) -> Target:
        raise ModelNeeded(f"a chunk of {self._models.policy.name} needs the model's encoders")


class StoredOnlyRunner:
    """Runs model-free chunk jobs here; raises ModelNeeded on the first chunk that needs the model."""

    def run(self, job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, progress: Any = None) -> list[Any]:
        """Return ``job.run`` of every chunk, in order, none of them loading the model."""
        results = []
        for role, start, stop in chunks:
            results.append(job.run(_NoModel(models), role, start, stop))  # type: ignore[arg-type]
            if progress is not None:
                progress.update(stop - start)
        return results


class FirstJobStops:
    """Runs no chunk job here: the first one (the sample pass) raises ModelNeeded, so that the ranks run them all.

    Everything an audit does before its first chunk job (the model-free checks) has then run here;
    the sample counts, which an audit checks after the sample pass, are checked before it (``counts_first``).
    """

    counts_first = True

    def run(self, job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, progress: Any = None) -> list[Any]:
        """Raise ModelNeeded: the chunks are the ranks' work."""
        raise ModelNeeded(f"the chunks of {models.policy.name} are the ranks' work")


def launcher_runner(policy: Policy, store_root: Path | None) -> StoredOnlyRunner | FirstJobStops:
    """Return the runner of the launching process's attempt: a re-gate from the store where one may be tried, else checks only."""
    return StoredOnlyRunner() if may_regate_here(policy, store_root) else FirstJobStops()


def may_regate_here(policy: Policy, store_root: Path | None) -> bool:
    """Return whether a distributed audit of ``policy`` may first try a re-gate here from the chunk store at ``store_root``.

    Not without a store, nor from one that holds no chunk at all (a first run: the attempt would
    only decode the images for the checks before the ranks do it again), nor for a custom loader.
    """
    if store_root is None or policy.model.loader is not None:
        return False
    return next(Path(store_root).glob("*/*.npz"), None) is not None


def rank0_device(requested: str) -> str:
    """Return the device rank 0 of a torchrun audit scores on (its chunk store key), without torch where certain."""
    if device_type_without_torch(requested) == "cpu":
        return "cpu"  # cpu, or auto where no GPU driver is present: rank 0 scores on the CPU too
    from naa_guard.scoring.distributed import rank_device

    return rank_device(requested, 0)
