"""A latent model's encodings stored per chunk: VAE latents and text embeddings, computed once.

A latent audit spends much of its time and memory encoding: the VAE's latent of every image and
the text encoders' embedding of every caption. They depend only on the VAE and text encoders
(never on the UNet or the attack), so they are computed once per chunk, batch by batch exactly as
scoring would, and written beside the chunk store's scores (``<store>/encodings/<key>.npz``; an
audit without a store uses a folder of its process that is removed when the audit ends). A second
attack, a tuning candidate, a sweep setting, the model's reference (same VAE and text encoders)
or a new process reads them instead of loading images or calling the encoders. In memory only the
current chunk's encodings are held.

The key (:meth:`EncodingPlan.chunk_material`) covers the VAE, text encoder and tokenizer files
(and a LoRA, which may touch the text encoders), the scoring code, the image size, fit, dtype,
device type and batch size, and the chunk's samples: the set's files, the samples' names, indices
and rows, and their captions. A stored file that is not exactly this chunk's (another key, a
damaged payload, NaN, another shape) is never used: the chunk is encoded again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from naa_guard.errors import NonFiniteScoreError
from naa_guard.scoring.keyedfiles import keyed_path, load_keyed, save_keyed

if TYPE_CHECKING:
    import torch

    from naa_guard.policy import Policy
    from naa_guard.samples import SampleSet
    from naa_guard.targets import AnyModelInfo, Target

P = ParamSpec("P")
R = TypeVar("R")
ENCODINGS_FORMAT = 1
_TEMPORARY: list[tempfile.TemporaryDirectory[str]] = []  # this process's folder, for audits without a store


def stores_encodings(target: object) -> bool:
    """Return whether the target's encodings can be stored (a latent target: encode_images / encode_captions)."""
    return all(callable(getattr(target, name, None)) for name in ("encode_images", "encode_captions", "condition"))


@dataclass(frozen=True)
class EncodingPlan:
    """Where and under what key a job's chunks' encodings are stored (sent whole to every rank)."""

    root: str | None  # the folder; None: this process's temporary folder
    material: dict[str, Any]  # what every chunk's encodings depend on besides its samples
    set_digests: dict[str, str]  # role -> digest of the set's files

    def folder(self) -> Path:
        """Return the folder the encodings are stored in."""
        if self.root is not None:
            return Path(self.root)
        if not _TEMPORARY:
            _TEMPORARY.append(tempfile.TemporaryDirectory(prefix="naa-guard-encodings-"))
        return Path(_TEMPORARY[0].name)

    def chunk_material(self, samples: SampleSet, role: str, start: int, stop: int) -> dict[str, Any]:
        """Return the key material of the encodings of the samples at positions start..stop-1."""
        identity = hashlib.sha256(json.dumps([list(samples.names[start:stop]), list(samples.captions[start:stop])]).encode())
        identity.update(b"\0" + np.ascontiguousarray(samples.indices[start:stop], dtype="<i8").tobytes())
        identity.update(b"\0" + np.ascontiguousarray(samples.rows[start:stop], dtype="<i8").tobytes())
        return {**self.material, "format": ENCODINGS_FORMAT, "set": self.set_digests[role], "chunk": identity.hexdigest(), "count": stop - start}


def encoding_plan(info: AnyModelInfo | None, policy: Policy, sets: dict[str, SampleSet], *, root: Path | None, device: str, batch: int) -> EncodingPlan | None:
    """Return how the sets' encodings are stored for this model (None: a model whose encodings are not stored).

    Only a latent pipeline read from its folder has encodings worth storing and an identity for
    its encoders; a pixel model's "encoding" is the image itself, and a custom loader's model
    has no encoder files to key by. ``batch`` is the samples per model call (encodings are
    computed batch by batch as scoring batches them).
    """
    from naa_guard.samples import files_digest
    from naa_guard.scoring.keys import package_digest
    from naa_guard.targets import LatentModelInfo

    if not isinstance(info, LatentModelInfo):
        return None
    runtime = policy.runtime
    material = {
        "encoders": files_digest(info.encoder_files()),
        "encoders_material": info.identity_material(),
        "code": package_digest(),
        "size": info.sample_size,
        "fit": policy.data.fit,
        "dtype": runtime.dtype,
        "device": device,
        "batch": batch,
    }
    return EncodingPlan(str(root) if root is not None else None, material, {role: files_digest(samples.files) for role, samples in sets.items()})


def forget_temporary_encodings() -> None:
    """Remove the encodings this process stored for audits without a store."""
    while _TEMPORARY:
        folder = _TEMPORARY.pop()
        shutil.rmtree(folder.name, ignore_errors=True)


def forgets_temporary_encodings(function: Callable[P, R]) -> Callable[P, R]:
    """Decorate an audit-like call: when it ends, the encodings it kept in the process's folder are removed."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        finally:
            forget_temporary_encodings()

    return wrapper


@dataclass
class ChunkEncodings:
    """One chunk's encodings: each sample's latent and its row in the chunk's table of text conditions."""

    latents: np.ndarray  # float32 (n, C, h, w)
    texts: dict[str, np.ndarray]  # name -> float32 (distinct captions of the chunk's batches, ...)
    text_rows: np.ndarray  # int64 (n,): each sample's row in ``texts``

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def batch(self, target: Target, offset: int, count: int) -> tuple[torch.Tensor, Any]:
        """Return ``target.encode``'s (x0, cond) of the samples at chunk positions offset..offset+count-1."""
        import torch

        x0 = torch.from_numpy(np.ascontiguousarray(self.latents[offset : offset + count])).to(target.device)
        rows = self.text_rows[offset : offset + count]
        first = int(rows.min()) if len(rows) else 0
        table = {name: torch.from_numpy(np.ascontiguousarray(values[first : int(rows.max()) + 1])) for name, values in self.texts.items()} if len(rows) else {}
        return x0, target.condition(table, torch.from_numpy(rows - first))  # type: ignore[attr-defined]

    def problem(self, count: int) -> str | None:
        """Return why these arrays are not the encodings of ``count`` samples (None: they are)."""
        if self.latents.ndim != 4 or self.latents.dtype != np.float32 or len(self) != count:
            return f"its latents are {self.latents.dtype} {self.latents.shape}, not float32 latents of {count} samples"
        if self.text_rows.shape != (count,) or self.text_rows.dtype != np.int64:
            return "its text rows are not one int64 row per sample"
        rows = {len(values) for values in self.texts.values()}
        if len(rows) != 1 or (count and not 0 <= int(self.text_rows.min()) <= int(self.text_rows.max()) < rows.pop()):
            return "its text tables and rows do not agree"
        if not all(values.dtype == np.float32 and np.isfinite(values).all() for values in (self.latents, *self.texts.values())):
            return "it holds non-finite or non-float32 values"
        return None


def encode_chunk(target: Target, images: np.ndarray, captions: tuple[str | None, ...], step: int, names: tuple[str, ...]) -> ChunkEncodings:
    """Return the encodings of a decoded chunk, encoded ``step`` samples at a time as scoring batches them."""
    import torch

    latents, tables, rows, offset = [], [], [], 0
    for first in range(0, len(images), step):
        pixels = torch.from_numpy(np.ascontiguousarray(images[first : first + step])).to(target.device)
        try:
            with torch.inference_mode():
                latents.append(target.encode_images(pixels).to("cpu", torch.float32).numpy())  # type: ignore[attr-defined]
                table, index = target.encode_captions(captions[first : first + step])  # type: ignore[attr-defined]
        except NonFiniteScoreError as exc:
            shown = ", ".join(names[first : first + step][:5])
            raise NonFiniteScoreError(f"encoding the sample(s) {shown}{' ...' if len(pixels) > 5 else ''}: {exc}") from None
        tables.append({name: values.to("cpu", torch.float32).numpy() for name, values in table.items()})
        rows.append(index.numpy().astype(np.int64) + offset)
        offset += len(next(iter(table.values())))
    if not latents:
        raise ValueError("a chunk has at least one sample")
    texts = {name: np.concatenate([table[name] for table in tables]) for name in tables[0]}
    return ChunkEncodings(np.concatenate(latents), texts, np.concatenate(rows))


def stored_encodings(plan: EncodingPlan, samples: SampleSet, role: str, start: int, stop: int) -> ChunkEncodings | None:
    """Return the chunk's stored encodings, or None (a file that is not exactly this chunk's is a warning)."""
    loaded = load_keyed(plan.folder(), plan.chunk_material(samples, role, start, stop))
    if loaded is None:
        return None
    if isinstance(loaded, str):
        warnings.warn(f"naa-guard: stored encodings ignored and computed again: {loaded}", stacklevel=2)
        return None
    arrays, _ = loaded
    texts = {name.removeprefix("text_"): values for name, values in arrays.items() if name.startswith("text_") and name != "text_rows"}
    if "latents" not in arrays or "text_rows" not in arrays or not texts:
        warnings.warn(f"naa-guard: stored encodings of {role} {start}..{stop} ignored and computed again: arrays {sorted(arrays)} are not a chunk's encodings", stacklevel=2)
        return None
    encodings = ChunkEncodings(arrays["latents"], texts, arrays["text_rows"])
    if (problem := encodings.problem(stop - start)) is not None:
        warnings.warn(f"naa-guard: stored encodings of {role} {start}..{stop} ignored and computed again: {problem}", stacklevel=2)
        return None
    return encodings


def stored_encodings_exist(plan: EncodingPlan, samples: SampleSet, role: str, start: int, stop: int) -> bool:
    """Return whether a file for the chunk's encodings exists (cheap; whoever reads it still checks it)."""
    return keyed_path(plan.folder(), plan.chunk_material(samples, role, start, stop)).is_file()


def save_encodings(plan: EncodingPlan, samples: SampleSet, role: str, start: int, stop: int, encodings: ChunkEncodings) -> None:
    """Store a chunk's encodings; a folder that cannot be written costs time (a warning), never the audit."""
    arrays = {"latents": encodings.latents, "text_rows": encodings.text_rows, **{f"text_{name}": values for name, values in encodings.texts.items()}}
    try:
        save_keyed(plan.folder(), plan.chunk_material(samples, role, start, stop), arrays)
    except OSError as exc:
        warnings.warn(f"naa-guard: could not store the encodings of {role} {start}..{stop} in {plan.folder()}: {exc}; they are computed again when needed", stacklevel=2)


def chunk_encodings(plan: EncodingPlan, encoder: Callable[[], Target], samples: SampleSet, role: str, start: int, stop: int, step: int, images: np.ndarray | None = None) -> ChunkEncodings:
    """Return the chunk's encodings: stored ones, else encoded here by ``encoder()`` (asked only then; from ``images`` when already decoded) and stored."""
    stored = stored_encodings(plan, samples, role, start, stop)
    if stored is not None:
        return stored
    pixels = samples.decode(start, stop) if images is None else images
    encodings = encode_chunk(encoder(), pixels, samples.captions[start:stop], step, samples.names[start:stop])
    save_encodings(plan, samples, role, start, stop, encodings)
    return encodings
