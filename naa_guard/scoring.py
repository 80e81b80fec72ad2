"""The scoring loop: every sample of a set scored by an attack, chunk by chunk, batch by batch.

A set is cut into chunks of about ``CHUNK_SAMPLES`` images (a whole number of batches). A chunk
is the unit of work: its images are decoded when it starts and dropped when it ends (memory stays
flat in the number of samples), its scores are saved to the chunk store as soon as it finishes
(a killed run resumes there), and chunks are what a distributed run spreads over its ranks. A
sample's score depends only on its own image, noise key and seed, never on the chunk or the batch
it is scored in (seeded per-sample noise; model calls padded to a fixed shape family).

Chunks run through a runner: :class:`LocalRunner` here, or the distributed runner of
:mod:`naa_guard.distributed`, which gives each rank its share and gathers the results on rank 0.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from naa_guard.attacks import ATTACKS, Attack
from naa_guard.checks import SetSummary, chunk_feature_rows, merge_summary, summarize_chunk
from naa_guard.data import SampleSet
from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.scorecache import cached_scores_problem
from naa_guard.scorestore import ChunkStore
from naa_guard.targets import PAD_MULTIPLE, AnyModelInfo, Target, as_target, load_target, probe_target, read_model_info, resolve_device
from naa_guard.targets.custom import load_custom_target

if TYPE_CHECKING:
    from naa_guard.attacks.base import AttackParams
    from naa_guard.audit import AuditResult
    from naa_guard.scorecache import ScoreCache
    from naa_guard.policy import Policy

CHUNK_SAMPLES = 256  # images per chunk, rounded to a whole number of batches
SCORE_COLUMNS = ("attack", "role", "index", "source", "score")

# --------------------------------------------------------------------------- chunks and batches


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


def score_chunk(attack: Attack, target: Target, samples: SampleSet, role: str, start: int, stop: int, *, batch_size: int, seed: int) -> np.ndarray:
    """Return the attack's float64 scores of the samples at positions start..stop-1, decoded here."""
    import torch

    from naa_guard.attacks.common import sample_keys

    images = samples.decode(start, stop)
    scores = []
    step = model_batch(batch_size)
    for offset in range(0, len(images), step):
        first = start + offset
        pixels = torch.from_numpy(np.ascontiguousarray(images[offset : offset + step])).to(target.device)
        keys = sample_keys(role, samples.indices[first : first + len(pixels)])
        try:
            with torch.inference_mode():
                x0, cond = target.encode(pixels, samples.captions[first : first + len(pixels)])
                batch_scores = attack.score(target, x0, keys, seed, cond).detach().to("cpu", torch.float64).numpy()
        except NonFiniteScoreError as exc:
            rows = list(getattr(exc, "batch_rows", None) or range(len(pixels)))
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


# --------------------------------------------------------------------------- the model


def check_timesteps(attack: Attack, target: Target) -> None:
    """Return None; raise TargetError when the attack queries past the end of the model's schedule."""
    steps = len(target.alphas_cumprod)
    if attack.max_timestep >= steps:
        raise TargetError(
            f"attack {attack.name} queries timestep {attack.max_timestep}, but the model's schedule has "
            f"only {steps} timesteps (0..{steps - 1}). Lower the attack's timestep in attacks.{attack.name}."
        )


def load_model(policy: Policy, info: AnyModelInfo | None) -> Target:
    """Return the policy's model (diffusers folder or custom loader), probed with one test batch.

    With ``runtime.compile: true`` the UNet (a target's ``unet`` attribute) goes through
    ``torch.compile``; a target without one runs as it is.
    """
    import torch

    runtime = policy.runtime
    if info is None:
        loader = str(policy.model.loader)
        target = load_custom_target(loader, policy.model.path, device=resolve_device(runtime.device), dtype=getattr(torch, runtime.dtype))
        where = f"model.loader {loader!r}"
    else:
        target = load_target(info, allow_pickle=policy.model.allow_pickle, device=runtime.device, dtype=runtime.dtype)
        where = str(info.unet_dir)
    probe_target(target, where)
    if runtime.compile and hasattr(target, "unet"):
        target.unet = torch.compile(target.unet)
    return target


class ModelSource:
    """Loads the policy's model on first use and keeps it (one per process)."""

    def __init__(self, policy: Policy, info: AnyModelInfo | None, target: Target | None = None) -> None:
        self.policy, self.info, self._target = policy, info, as_target(target) if target is not None else None
        self.loaded = False  # whether this process loaded the model (not handed a target)

    @property
    def ready(self) -> Target | None:
        """Return the target if it is loaded, else None."""
        return self._target

    def target(self) -> Target:
        """Return the target, loading (and probing) the policy's model on first use."""
        if self._target is None:
            self._target, self.loaded = load_model(self.policy, self.info), True
        return self._target


def model_source(policy: Policy, target: Target | None = None) -> ModelSource:
    """Return a model source for ``policy`` (its folder read, nothing loaded; ``target`` stands in for the model)."""
    model = policy.model
    if model.single_file is not None:  # one checkpoint file, configured by model.config
        from naa_guard.targets.single_file import read_single_file_info

        info: AnyModelInfo | None = read_single_file_info(model.single_file, model.config, model.unet_subfolder)
    else:
        info = read_model_info(model.path, model.unet_subfolder, lora=model.lora, lora_scale=model.lora_scale) if model.loader is None else None
    return ModelSource(policy, info, target)


# --------------------------------------------------------------------------- jobs and runners


class ChunkJob(Protocol):
    """Work done chunk by chunk; sent whole (pickled) to every rank of a distributed run."""

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> Any:
        """Return the result of one chunk of the set of ``role``."""


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
    store_key: str | None

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> np.ndarray:
        """Return the chunk's scores (saved to the store first, when there is one)."""
        attack = ATTACKS[self.attack_name](self.params)
        target = models.target()
        check_timesteps(attack, target)
        samples = self.sets[role]
        scores = score_chunk(attack, target, samples, role, start, stop, batch_size=self.batch_size, seed=self.seed)
        if self.store is not None and self.store_key is not None:
            self.store.save(self.store_key, role, start, stop, _noise_keys(samples, role, start, stop), scores)
        return scores


@dataclass(frozen=True)
class SummaryJob:
    """Digest chunks of some sets for the validity checks (see naa_guard.checks.summarize)."""

    sets: dict[str, SampleSet]
    feature_positions: dict[str, np.ndarray | None]

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> tuple[list[str], np.ndarray | None]:
        """Return the chunk's digests and the shift features of its capped rows."""
        images = self.sets[role].decode(start, stop)
        return summarize_chunk(images, chunk_feature_rows(self.feature_positions.get(role), start, stop))


def _noise_keys(samples: SampleSet, role: str, start: int, stop: int) -> np.ndarray:
    from naa_guard.attacks.common import sample_keys

    return sample_keys(role, samples.indices[start:stop]).numpy()


def summarize_sets(runner: ChunkRunner, models: ModelSource, sets: dict[str, tuple[SampleSet, np.ndarray | None]], chunk_samples: int = CHUNK_SAMPLES) -> dict[str, SetSummary]:
    """Return each set's summary for the validity checks, its chunks run by ``runner``."""
    job = SummaryJob({role: samples for role, (samples, _) in sets.items()}, {role: positions for role, (_, positions) in sets.items()})
    chunks = [(role, start, stop) for role, (samples, _) in sets.items() for start, stop in chunk_bounds(len(samples), chunk_samples)]
    results = runner.run(job, chunks, models)
    return {role: merge_summary(samples, [part for (r, _, _), part in zip(chunks, results) if r == role]) for role, (samples, _) in sets.items()}


# --------------------------------------------------------------------------- the scorer


# (attack, sets by role) -> the content key of the attack's scores on these sets (None: not cacheable)
KeyFunction = Callable[[Attack, dict[str, SampleSet]], "str | None"]


def _progress(total: int, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


class Scorer:
    """Scores attacks on sample sets: from the caches when it can, else chunk by chunk on the model.

    Lookup order: the score cache (the whole result), then the chunk store (chunks finished by an
    earlier, possibly killed, run); only the missing chunks are scored, and the model is loaded
    only if a chunk is missing.
    """

    def __init__(
        self, policy: Policy, models: ModelSource, key: KeyFunction, *, score_cache: ScoreCache | None, store: ChunkStore | None,
        runner: ChunkRunner, progress: bool, chunk_samples: int = CHUNK_SAMPLES,
    ) -> None:  # fmt: skip
        self.policy, self.models, self.key, self.chunk_samples = policy, models, key, chunk_samples
        self.score_cache, self.store, self.runner, self.progress = score_cache, store, runner, progress
        self.uncacheable = False  # a custom loader without model.path: no model identity to key scores by
        self.cache_warnings: list[str] = []  # bad entries recomputed, failed writes

    @property
    def info(self) -> AnyModelInfo | None:
        """Return what was read from the model folder (None for a custom loader)."""
        return self.models.info

    @property
    def model_loaded(self) -> bool:
        """Return whether the model was loaded for this audit."""
        return self.models.loaded

    def score_sets(self, attack: Attack, sets: dict[str, SampleSet], label: str) -> tuple[dict[str, np.ndarray], bool]:
        """Return each set's scores by role ("members", "nonmembers", "control"), and whether cached."""
        runtime = self.policy.runtime
        key = self.key(attack, sets) if self.score_cache is not None or self.store is not None else None
        self.uncacheable = self.uncacheable or (key is None and (self.score_cache is not None or self.store is not None))
        cached = self.score_cache.get(key) if self.score_cache is not None and key is not None else None
        if cached is not None:
            problem = cached_scores_problem(cached, sets)
            if problem is None:
                return {role: np.asarray(cached[role], dtype=np.float64) for role in sets}, True
            self.cache_warnings.append(f"score cache entry {key} ({label}) was ignored and recomputed: {problem}")

        size = chunk_size(model_batch(runtime.batch_size), self.chunk_samples)
        store_key = self._store_key(key, size) if self.store is not None and key is not None else None
        found: dict[Chunk, np.ndarray] = {}
        missing: list[Chunk] = []
        for role, samples in sets.items():
            for start, stop in chunk_bounds(len(samples), size):
                stored = self.store.load(store_key, role, start, stop, _noise_keys(samples, role, start, stop)) if store_key is not None else None
                if stored is not None:
                    found[(role, start, stop)] = stored
                else:
                    missing.append((role, start, stop))
        if missing:
            job = ScoreJob(attack.name, attack.params, sets, runtime.batch_size, runtime.seed, self.store if store_key else None, store_key)
            with _progress(sum(stop - start for _, start, stop in missing), f"{self.policy.name}: {label}", self.progress) as bar:
                found.update(zip(missing, self.runner.run(job, missing, self.models, bar)))
        scores = {role: np.concatenate([found[(role, start, stop)] for start, stop in chunk_bounds(len(samples), size)]) for role, samples in sets.items()}
        if self.score_cache is not None and key is not None:
            entry = {**scores, **{f"{role}_indices": samples.indices for role, samples in sets.items()}}
            try:
                self.score_cache.put(key, entry)
            except OSError as exc:  # a read-only or full cache folder costs time, never the verdict
                self.cache_warnings.append(f"could not write the score cache entry {key} ({label}): {exc}; the next run recomputes it")
        return scores, not missing

    def _store_key(self, key: str, size: int) -> str:
        """Return the chunk store's key: the score key plus what could change a score's last bits."""
        runtime = self.policy.runtime
        device = self.models.ready.device if self.models.ready is not None else resolve_device(runtime.device)
        return ChunkStore.key_for(key, chunk_size=size, batch_size=runtime.batch_size, device=str(getattr(device, "type", device)), compile=runtime.compile)

    def __call__(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, label: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (member scores, non-member scores, whether cached): the tuning's score function."""
        scores, cached = self.score_sets(attack, {"members": members, "nonmembers": nonmembers}, label)
        return scores["members"], scores["nonmembers"], cached


# --------------------------------------------------------------------------- per-sample scores out


def write_scores(result: AuditResult, path: Path) -> Path:
    """Write every scored sample as CSV (attack, role, index, source, score) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for name, attack in result.attacks.items():
            for role, (indices, origins, scores) in attack.per_sample().items():
                for index, origin, score in zip(indices.tolist(), origins, scores.tolist()):
                    writer.writerow((name, role, index, origin, repr(score)))
    return path
