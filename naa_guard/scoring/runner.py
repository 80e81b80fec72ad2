"""Chunks of batches: every sample of a set scored by an attack, chunk by chunk, batch by batch.

A set is cut into chunks of about ``CHUNK_SAMPLES`` images (a whole number of batches). A chunk
is the unit of work: its images are decoded when it starts and dropped when it ends (memory stays
flat in the number of samples), its scores are saved to the chunk store as soon as it finishes
(a killed run resumes there), and chunks are what a distributed run spreads over its ranks. A
sample's score depends only on its own image, noise key and seed, never on the chunk or the batch
it is scored in (seeded per-sample noise; model calls padded to a fixed shape family).

Chunks run through a runner: :class:`LocalRunner` here, or the distributed runner of
:mod:`naa_guard.scoring.distributed`, which gives each rank its share and gathers the results on rank 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from naa_guard.attacks import ATTACKS, Attack
from naa_guard.attacks.keys import sample_keys_array
from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.samples import SampleSet
from naa_guard.scoring import abort
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.scoring.encodings import ChunkEncodings, EncodingPlan, chunk_encodings, stored_encodings_exist, stores_encodings
from naa_guard.scoring.models import ModelSource
from naa_guard.targets import PAD_MULTIPLE, Target

if TYPE_CHECKING:
    from naa_guard.attacks.base import AttackParams


CHUNK_SAMPLES = 256  # images per chunk, rounded to a whole number of batches


def chunk_size(batch_size: int, samples: int = CHUNK_SAMPLES) -> int:
    """Return the chunk size for this batch size: a whole number of batches, about ``samples`` images."""
    return batch_size * max(1, round(samples / batch_size))


def model_batch(batch_size: int) -> int:
    """Return the samples per model call: ``batch_size`` rounded down to a multiple of PAD_MULTIPLE.

    Model calls are padded up to a multiple of PAD_MULTIPLE (so that scores do not depend on the
    batch size); at batch 100 that computes 112 rows for 100, while batches of 96 waste nothing.
    Scores are the same either way.
    """
    return batch_size - batch_size % PAD_MULTIPLE if batch_size > PAD_MULTIPLE else batch_size


def chunk_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """Return the (start, stop) positions of the chunks of a set of ``count`` samples."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def score_chunk(
    attack: Attack, target: Target, samples: SampleSet, role: str, start: int, stop: int, *, batch_size: int, seed: int, encodings: ChunkEncodings | None = None,
) -> np.ndarray:  # fmt: skip
    """Return the attack's float64 scores of the samples at positions start..stop-1.

    The images are decoded and encoded here, batch by batch, unless the chunk's ``encodings``
    (:mod:`naa_guard.scoring.encodings`) are given: then no image is read and no encoder runs.
    """
    import torch

    from naa_guard.attacks.common import sample_keys

    images = samples.decode(start, stop) if encodings is None else None
    count = len(images) if images is not None else len(encodings)  # type: ignore[arg-type]
    scores = []
    step = model_batch(batch_size)
    for offset in range(0, count, step):
        abort.check()  # another rank of a distributed job failed: stop this share now (no-op in one process)
        first, size = start + offset, min(step, count - offset)
        keys = sample_keys(role, samples.indices[first : first + size])
        try:
            with torch.inference_mode():
                if images is not None:
                    pixels = torch.from_numpy(np.ascontiguousarray(images[offset : offset + size])).to(target.device)
                    x0, cond = target.encode(pixels, samples.captions[first : first + size])
                else:
                    x0, cond = encodings.batch(target, offset, size)  # type: ignore[union-attr]
                batch_scores = attack.score(target, x0, keys, seed, cond).detach().to("cpu", torch.float64).numpy()
        except NonFiniteScoreError as exc:
            rows = list(getattr(exc, "batch_rows", None) or range(size))
            names = ", ".join(samples.names[first + row] for row in rows[:5])
            raise NonFiniteScoreError(f"attack {attack.name}, {role} sample(s) {names}{' ...' if len(rows) > 5 else ''}: {exc}") from None
        bad = np.flatnonzero(~np.isfinite(batch_scores))
        if bad.size:
            names = ", ".join(samples.names[first + i] for i in bad[:5])
            raise NonFiniteScoreError(
                f"attack {attack.name} gave non-finite scores for {bad.size} {role} sample(s), e.g. {names}. "
                f"The model's predictions are degenerate for these images; check the checkpoint, or use runtime.dtype: float32."
            )
        scores.append(batch_scores)
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)


def score_samples(attack: Attack, target: Target, samples: SampleSet, role: str, *, batch_size: int, seed: int, progress: Any = None) -> np.ndarray:
    """Return the attack's float64 score of every sample in the set, chunk by chunk."""
    scores = []
    for start, stop in chunk_bounds(len(samples), chunk_size(model_batch(batch_size))):
        scores.append(score_chunk(attack, target, samples, role, start, stop, batch_size=batch_size, seed=seed))
        if progress is not None:
            progress.update(stop - start)
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float64)


def check_timesteps(attack: Attack, target: Target) -> None:
    """Return None; raise TargetError when the attack queries past the end of the model's schedule."""
    steps = len(target.alphas_cumprod)
    if attack.max_timestep >= steps:
        raise TargetError(
            f"attack {attack.name} queries timestep {attack.max_timestep}, but the model's schedule has "
            f"only {steps} timesteps (0..{steps - 1}). Lower the attack's timestep in attacks.{attack.name}."
        )


class ChunkJob(Protocol):
    """Work done chunk by chunk; sent whole (pickled) to every rank of a distributed run."""

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> Any:
        """Return the result of one chunk of the set of ``role``."""

    def result_length(self, result: Any) -> int:
        """Return how many samples a chunk's result covers (rank 0 checks it against the chunk's size)."""


Chunk = tuple[str, int, int]  # (role, start, stop)


class ChunkRunner(Protocol):
    """Runs a job's chunks (here, or spread over ranks) and returns their results in order."""

    def run(self, job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, progress: Any = None) -> list[Any]:
        """Return ``job.run`` of every chunk, in the order of ``chunks``."""


class LocalRunner:
    """Runs every chunk in this process, one after the other."""

    def run(self, job: ChunkJob, chunks: Sequence[Chunk], models: ModelSource, progress: Any = None) -> list[Any]:
        """Return ``job.run`` of every chunk, in order."""
        results = []
        for role, start, stop in chunks:
            results.append(job.run(models, role, start, stop))
            if progress is not None:
                progress.update(stop - start)
        return results


@dataclass(frozen=True)
class ScoreJob:
    """Score chunks of some sets with one attack; save each chunk to the store as it finishes."""

    attack_name: str
    params: AttackParams
    sets: dict[str, SampleSet]
    batch_size: int
    seed: int
    store: ChunkStore | None
    store_key: dict[str, Any] | None  # the chunk key material (ChunkStore.material_for)
    encodings: EncodingPlan | None = None  # where a latent model's encodings are stored (None: encoded per batch)

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> np.ndarray:
        """Return the chunk's scores (saved to the store first, when there is one)."""
        attack = ATTACKS[self.attack_name](self.params)
        samples = self.sets[role]
        encodings = None
        if self.encodings is not None and (models.in_parts or stores_encodings(models.target())):  # encoded (when not stored) before the denoiser is asked for
            encodings = chunk_encodings(self.encodings, models.encoder, samples, role, start, stop, model_batch(self.batch_size))
        target = models.target()
        check_timesteps(attack, target)
        scores = score_chunk(attack, target, samples, role, start, stop, batch_size=self.batch_size, seed=self.seed, encodings=encodings)
        if self.store is not None and self.store_key is not None:
            self.store.save(self.store_key, role, start, stop, noise_keys(samples, role, start, stop), scores)
        return scores

    def result_length(self, result: np.ndarray) -> int:
        """Return the number of scores in a chunk's result (-1: not a 1-D array of scores)."""
        return len(result) if isinstance(result, np.ndarray) and result.ndim == 1 else -1


@dataclass(frozen=True)
class EncodeJob:
    """Store the encodings of chunks of some sets (a model that loads in parts: before its denoiser loads)."""

    sets: dict[str, SampleSet]
    plan: EncodingPlan
    step: int  # samples per encoder call, as scoring batches them

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> int:
        """Return the chunk's sample count, after its encodings are stored (encoded here only when not already)."""
        samples = self.sets[role]
        if not stored_encodings_exist(self.plan, samples, role, start, stop):
            chunk_encodings(self.plan, models.encoder, samples, role, start, stop, self.step)
        return stop - start

    def result_length(self, result: int) -> int:
        """Return the chunk's sample count."""
        return result


def noise_keys(samples: SampleSet, role: str, start: int, stop: int) -> np.ndarray:
    """Return the noise keys of a chunk's samples (torch-free: a re-gate from stored chunks checks them)."""
    return sample_keys_array(role, samples.indices[start:stop])
