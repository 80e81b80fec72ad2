"""The sample pass: every set read once, chunk by chunk, before any attack runs.

Each chunk is decoded once for everything that needs its pixels before scoring: the validity
checks' digests and shift features, the decoding notes (fitted, converted, alpha dropped) and,
when the first attack will need them, a latent model's encodings (stored for the attacks by
:mod:`naa_guard.scoring.encodings`). A chunk's summary (digests, features, notes) is stored too,
under a key of the set's files, the chunk's samples, the image geometry and the code, so a
re-gate of unchanged data decodes nothing. A stored summary is used only under exactly its key
and digest; anything else is recomputed. The notes travel with each chunk's result, so rank 0's
report states what every rank's decoding did.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.samples import SampleSet, files_digest
from naa_guard.samples.summary import SetSummary, chunk_feature_rows, merge_summary, summarize_chunk
from naa_guard.scoring.encodings import EncodingPlan, encode_chunk, save_encodings, stored_encodings_exist
from naa_guard.scoring.keyedfiles import load_keyed, save_keyed
from naa_guard.scoring.runner import CHUNK_SAMPLES, ChunkRunner, chunk_bounds

if TYPE_CHECKING:
    from naa_guard.scoring.models import ModelSource

SUMMARY_FORMAT = 1
SampleChunk = tuple[list[str], "np.ndarray | None", dict[str, Any]]  # digests, shift features, decoding notes


@dataclass(frozen=True)
class SampleJob:
    """Read chunks of some sets once: summaries for the checks and, when planned, encodings for the first attack."""

    sets: dict[str, SampleSet]
    feature_positions: dict[str, np.ndarray | None]
    summary_root: str | None  # where summaries are stored (None: not stored)
    summary_material: dict[str, Any]  # what every chunk's summary depends on besides its samples
    set_digests: dict[str, str]  # role -> digest of the set's files (read once, on rank 0); empty when nothing is stored
    encodings: EncodingPlan | None = None
    step: int = 1  # samples per encoder call, as scoring batches them

    def run(self, models: ModelSource, role: str, start: int, stop: int) -> SampleChunk:
        """Return the chunk's digests, shift features and decoding notes (and store what was computed)."""
        samples = self.sets[role]
        rows = chunk_feature_rows(self.feature_positions.get(role), start, stop)
        material = self._material(samples, role, start, stop, rows) if self.summary_root is not None else {}
        stored = self._stored(material, len(rows) if rows is not None else 0, stop - start) if self.summary_root is not None else None
        encode = self.encodings is not None and not stored_encodings_exist(self.encodings, samples, role, start, stop)
        if stored is not None and not encode:
            return stored
        images = samples.decode(start, stop)
        digests, features = summarize_chunk(images, rows)
        notes = samples.log.of(samples.names[start:stop]) if samples.log is not None else {}
        if encode and self.encodings is not None:
            encoded = encode_chunk(models.encoder(), images, samples.captions[start:stop], self.step, samples.names[start:stop])
            save_encodings(self.encodings, samples, role, start, stop, encoded)
        if stored is None and self.summary_root is not None:
            arrays = {"features": features} if features is not None else {}
            try:
                save_keyed(Path(self.summary_root), material, arrays, {"digests": digests, "notes": notes})
            except OSError as exc:
                warnings.warn(f"naa-guard: could not store the checks' summary of {role} {start}..{stop} in {self.summary_root}: {exc}", stacklevel=2)
        return digests, features, notes

    def result_length(self, result: SampleChunk) -> int:
        """Return the number of image digests in a chunk's result."""
        return len(result[0])

    def _material(self, samples: SampleSet, role: str, start: int, stop: int, rows: np.ndarray | None) -> dict[str, Any]:
        identity = hashlib.sha256(json.dumps(list(samples.names[start:stop])).encode())
        identity.update(b"\0" + np.ascontiguousarray(samples.indices[start:stop], dtype="<i8").tobytes())
        identity.update(b"\0" + np.ascontiguousarray(samples.rows[start:stop], dtype="<i8").tobytes())
        features = None if rows is None else [int(row) for row in rows]
        return {**self.summary_material, "format": SUMMARY_FORMAT, "role": role, "set": self.set_digests[role], "chunk": identity.hexdigest(), "features": features}

    def _stored(self, material: dict[str, Any], feature_count: int, count: int) -> SampleChunk | None:
        """Return a stored summary of exactly this chunk, or None (a damaged or foreign one is a warning)."""
        loaded = load_keyed(Path(str(self.summary_root)), material)
        if loaded is None:
            return None
        problem = loaded if isinstance(loaded, str) else _summary_problem(*loaded, feature_count, count)
        if problem is not None:
            warnings.warn(f"naa-guard: a stored summary for the checks was ignored and computed again: {problem}", stacklevel=2)
            return None
        arrays, fields = loaded  # type: ignore[misc]
        return list(fields["digests"]), arrays.get("features"), dict(fields["notes"])


def _summary_problem(arrays: dict[str, np.ndarray], fields: dict[str, Any], feature_count: int, count: int) -> str | None:
    digests, notes, features = fields.get("digests"), fields.get("notes"), arrays.get("features")
    if not isinstance(digests, list) or len(digests) != count or not all(isinstance(d, str) and len(d) == 64 for d in digests):
        return f"it does not hold {count} image digests"
    if not isinstance(notes, dict):
        return "its decoding notes are missing"
    if (features is None) != (feature_count == 0) or (features is not None and (features.ndim != 2 or len(features) != feature_count or not np.isfinite(features).all())):
        return f"its shift features are not {feature_count} finite rows"
    return None


def summarize_sets(
    runner: ChunkRunner, models: ModelSource, sets: dict[str, tuple[SampleSet, np.ndarray | None]], *, chunk_samples: int = CHUNK_SAMPLES,
    summary_root: Path | None = None, summary_material: dict[str, Any] | None = None, encodings: EncodingPlan | None = None, step: int = 1,
) -> dict[str, SetSummary]:  # fmt: skip
    """Return each set's summary for the validity checks, its chunks run by ``runner`` (storing encodings when planned).

    ``chunk_samples`` must be the scoring's chunk size when encodings are planned: the first
    attack then finds every chunk's encodings under its own chunk key.
    """
    job = SampleJob(
        {role: samples for role, (samples, _) in sets.items()}, {role: positions for role, (_, positions) in sets.items()},
        str(summary_root) if summary_root is not None else None, summary_material or {},
        {role: files_digest(samples.files) for role, (samples, _) in sets.items()} if summary_root is not None else {}, encodings, step,
    )  # fmt: skip
    chunks = [(role, start, stop) for role, (samples, _) in sets.items() for start, stop in chunk_bounds(len(samples), chunk_samples)]
    results = runner.run(job, chunks, models)
    for role, (samples, _) in sets.items():
        if samples.log is not None:  # what every rank's (or an earlier run's) decoding noted, in chunk order
            earlier = dict(samples.log.alpha)
            samples.log.alpha.clear()
            for (r, _, _), (_, _, notes) in zip(chunks, results):
                if r == role:
                    samples.log.add(notes)
            samples.log.alpha.update(earlier)
    return {role: merge_summary(samples, [part[:2] for (r, _, _), part in zip(chunks, results) if r == role]) for role, (samples, _) in sets.items()}
