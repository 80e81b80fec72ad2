"""The scorer: an attack's scores on some sets, from the score cache, the chunk store or the
model, in that order; stored scores are used only under the key they were written with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.attacks import Attack
from naa_guard.samples import SampleSet
from naa_guard.scoring.chunks import ChunkStore, material_key
from naa_guard.scoring.encodings import EncodingPlan, encoding_plan, stored_encodings_exist
from naa_guard.scoring.keyedfiles import store_warnings
from naa_guard.scoring.keys import open_entry, sealed_entry
from naa_guard.scoring.models import ModelSource
from naa_guard.scoring.runner import CHUNK_SAMPLES, Chunk, ChunkRunner, EncodeJob, ScoreJob, chunk_bounds, chunk_size, model_batch, noise_keys
from naa_guard.targets import AnyModelInfo
from naa_guard.targets.devicekind import device_type

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.scoring.keys import ScoreCache


# (attack, sets by role) -> what the attack's scores on these sets are keyed by (None: not cacheable)
KeyFunction = Callable[[Attack, dict[str, SampleSet]], "dict[str, Any] | None"]


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
        self.cache_warnings: list[str] = []  # bad entries and chunks recomputed, failed writes

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
        material = self.key(attack, sets) if self.score_cache is not None or self.store is not None else None
        key = material_key(material) if material is not None else None
        self.uncacheable = self.uncacheable or (key is None and (self.score_cache is not None or self.store is not None))
        cached = self.score_cache.get(key) if self.score_cache is not None and key is not None else None
        if cached is not None and material is not None:
            opened = open_entry(material, cached, sets)
            if not isinstance(opened, str):
                return opened, True
            self.cache_warnings.append(f"score cache entry {key} ({label}) was ignored and recomputed: {opened}")

        size = chunk_size(model_batch(runtime.batch_size), self.chunk_samples)
        store_key = self._store_material(material, size) if self.store is not None and material is not None else None
        found: dict[Chunk, np.ndarray] = {}
        missing: list[Chunk] = []
        for role, samples in sets.items():
            for start, stop in chunk_bounds(len(samples), size):
                stored = self._stored_chunk(self.store, store_key, samples, role, start, stop, label) if self.store is not None and store_key is not None else None
                if stored is not None:
                    found[(role, start, stop)] = stored
                else:
                    missing.append((role, start, stop))
        if missing:
            plan = self.encoding_plan(sets)
            self._encode_first(plan, sets, missing, label)
            job = ScoreJob(attack.name, attack.params, sets, runtime.batch_size, runtime.seed, self.store if store_key else None, store_key, plan)
            with _progress(sum(stop - start for _, start, stop in missing), f"{self.policy.name}: {label}", self.progress) as bar, store_warnings(self.cache_warnings):
                found.update(zip(missing, self.runner.run(job, missing, self.models, bar)))
        scores = {role: np.concatenate([found[(role, start, stop)] for start, stop in chunk_bounds(len(samples), size)]) for role, samples in sets.items()}
        if self.score_cache is not None and key is not None and material is not None:
            try:
                self.score_cache.put(key, sealed_entry(material, scores, sets))
            except OSError as exc:  # a read-only or full cache folder costs time, never the verdict
                self.cache_warnings.append(f"could not write the score cache entry {key} ({label}): {exc}; the next run recomputes it")
        return scores, not missing

    def encode_ahead(self, attacks: list[Attack], sets: dict[str, SampleSet], label: str) -> None:
        """Store the sets' encodings now, when the model loads in parts and one of ``attacks`` will score them on the model.

        Every chunk, in the order scoring lists them when none is stored (so each rank of a
        distributed audit encodes the chunks it scores). Nothing is loaded for sets whose scores are all stored.
        """
        if self.models.in_parts and any(self.scores_missing(attack, sets) for attack in attacks):
            size = chunk_size(model_batch(self.policy.runtime.batch_size), self.chunk_samples)
            self._encode_first(self.encoding_plan(sets), sets, [(role, start, stop) for role, samples in sets.items() for start, stop in chunk_bounds(len(samples), size)], label)

    def _encode_first(self, plan: EncodingPlan | None, sets: dict[str, SampleSet], chunks: list[Chunk], label: str) -> None:
        """Store the encodings of ``chunks`` before any is scored (a model in parts: its text encoders, then its denoiser)."""
        if plan is None or not self.models.in_parts or all(stored_encodings_exist(plan, sets[role], role, start, stop) for role, start, stop in chunks):
            return
        job = EncodeJob(sets, plan, model_batch(self.policy.runtime.batch_size))
        with _progress(sum(stop - start for _, start, stop in chunks), f"{self.policy.name}: encoding for {label}", self.progress) as bar, store_warnings(self.cache_warnings):
            self.runner.run(job, chunks, self.models, bar)

    def encoding_plan(self, sets: dict[str, SampleSet]) -> EncodingPlan | None:
        """Return where and how the sets' encodings are stored for this model (None: not stored; see scoring.encodings)."""
        root = self.store.root / "encodings" if self.store is not None else None
        return encoding_plan(self.info, self.policy, sets, root=root, device=self._device(), batch=model_batch(self.policy.runtime.batch_size))

    def scores_missing(self, attack: Attack, sets: dict[str, SampleSet]) -> bool:
        """Return whether scoring the attack on these sets would run the model (a quick look: files present, not read).

        Only a guess for planning (the sample pass encodes for the first attack when it will run);
        scoring itself checks every entry and chunk it uses.
        """
        material = self.key(attack, sets) if self.score_cache is not None or self.store is not None else None
        if material is None:
            return True
        key = material_key(material)
        cached = self.score_cache.get(key) if self.score_cache is not None else None
        if cached is not None and not isinstance(open_entry(material, cached, sets), str):
            return False
        if self.store is None:
            return True
        size = chunk_size(model_batch(self.policy.runtime.batch_size), self.chunk_samples)
        store_key = material_key(self._store_material(material, size))
        return not all(self.store.path_for(store_key, role, start, stop).is_file() for role, samples in sets.items() for start, stop in chunk_bounds(len(samples), size))

    def _device(self) -> str:
        """Return the device type scores are computed on (the loaded model's, else the policy's)."""
        return str(getattr(self.models.ready.device, "type", self.models.ready.device)) if self.models.ready is not None else device_type(self.policy.runtime.device)

    def _stored_chunk(self, store: ChunkStore, store_key: dict[str, Any], samples: SampleSet, role: str, start: int, stop: int, label: str) -> np.ndarray | None:
        """Return a chunk's scores from the store, or None (a file that is not this chunk's is a warning)."""
        stored, problem = store.load(store_key, role, start, stop, noise_keys(samples, role, start, stop))
        if problem is not None:
            where = store.path_for(material_key(store_key), role, start, stop)
            self.cache_warnings.append(f"stored chunk {where} ({label}, {role} {start}..{stop}) was ignored and recomputed: {problem}")
        return stored

    def _store_material(self, material: dict[str, Any], size: int) -> dict[str, Any]:
        """Return the chunk store's key material: the score key's plus what could change a score's last bits."""
        runtime = self.policy.runtime
        return ChunkStore.material_for(material, chunk_size=size, batch_size=runtime.batch_size, device=self._device(), compile=runtime.compile)

    def __call__(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, label: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (member scores, non-member scores, whether cached): the tuning's score function."""
        scores, cached = self.score_sets(attack, {"members": members, "nonmembers": nonmembers}, label)
        return scores["members"], scores["nonmembers"], cached
