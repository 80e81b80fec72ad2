"""The score cache's contract: what an entry is keyed by, and when a stored entry may be used.

A key (:func:`cache_key`) is a content hash of the model files, the sample files and which samples
were drawn, the attack's parameters, the source code of every module on the scoring path
(:func:`implementation_digest`), the scores format and the package version. An entry read back is
used only when :func:`open_entry` finds it sealed under the expected key material with a valid
digest (an HMAC under the cache secret, :mod:`naa_guard.scoring.cachesecret`) and
:func:`cached_scores_problem` finds nothing wrong with its scores; otherwise the audit recomputes
the scores and says so in its warnings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from naa_guard.attacks import Attack
from naa_guard.samples import SampleSet, files_digest
from naa_guard.scoring.cachesecret import cache_secret
from naa_guard.scoring.chunks import material_key
from naa_guard.scoring.keyedfiles import seal, unseal
from naa_guard.targets.custom import loader_identity
from naa_guard.version import __version__

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.targets import AnyModelInfo

__all__ = [
    "SCORES_FORMAT", "ScoreCache", "cache_key", "cache_material", "cached_scores_problem", "implementation_digest", "open_entry", "package_digest", "sealed_entry",
]  # fmt: skip

# Bump when the layout of cached score entries changes.
SCORES_FORMAT = 3


class ScoreCache(Protocol):
    """Stores an attack's scores by content key (the pytest plugin keeps one in its cache dir)."""

    def get(self, key: str) -> dict[str, np.ndarray] | None: ...

    def put(self, key: str, scores: dict[str, np.ndarray]) -> None: ...


def cache_key(info: AnyModelInfo | None, policy: Policy, attack: Attack, members: SampleSet, nonmembers: SampleSet, limit: int | None, control: SampleSet | None = None) -> str | None:
    """Return the content hash under which an attack's scores are cached (None: not cacheable)."""
    material = cache_material(info, policy, attack, members, nonmembers, limit, control)
    return material_key(material) if material is not None else None


def cache_material(info: AnyModelInfo | None, policy: Policy, attack: Attack, members: SampleSet, nonmembers: SampleSet, limit: int | None, control: SampleSet | None = None) -> dict[str, Any] | None:
    """Return what an attack's scores are keyed by, as JSON-ready parts (None: not cacheable).

    The chunk store keeps these parts in each chunk file, so a chunk is used only for exactly
    them. A custom loader's model is identified by the loader string and the files under
    model.path; without a path it has no identity, so its scores are not cached.
    """
    if info is not None:
        model = [files_digest(info.identity_files()), info.identity_material()]
    elif (model := loader_identity(str(policy.model.loader), policy.model.path)) is None:
        return None
    material = {
        "naa_guard": __version__,
        "scores_format": SCORES_FORMAT,
        "implementation": implementation_digest(attack),
        "model": model,
        "members": files_digest(members.files),
        "nonmembers": files_digest(nonmembers.files),
        "samples": hashlib.sha256(members.indices.tobytes() + b"|" + nonmembers.indices.tobytes()).hexdigest(),
        "attack": attack.describe(),
        "seed": policy.runtime.seed,
        "dtype": policy.runtime.dtype,
        "limit": limit,
        "fit": policy.data.fit,  # how images of another size were brought to the model's: changes every pixel
    }
    if control is not None:
        material["control"] = [files_digest(control.files), hashlib.sha256(control.indices.tobytes()).hexdigest()]
    if any(caption is not None for samples in (members, nonmembers, control) if samples is not None for caption in samples.captions):
        material["captions"] = hashlib.sha256(json.dumps([s.captions for s in (members, nonmembers, control) if s is not None]).encode()).hexdigest()
    return material


# What only judges or presents finished scores: the verdict and reports stages (below them no stage
# imports them: tests/test_layout.py), the result types and the faces. A change there cannot change
# a score, so cached scores stay valid. Everything else in the package is hashed, so a new module
# is on the scoring path unless it lives in one of these; tests/test_scorecache.py checks that the
# scoring code imports none of them.
NOT_ON_SCORING_PATH = frozenset({
    "verdict/", "reports/", "result.py", "__main__.py", "cli.py", "demo.py", "init_policy.py", "sweep.py",
})  # fmt: skip
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def left_out_of_the_key(name: str) -> bool:
    """Return whether the module at ``name`` (posix, relative to the package) is left out of the key."""
    return name in NOT_ON_SCORING_PATH or any(name.startswith(folder) for folder in NOT_ON_SCORING_PATH if folder.endswith("/"))


def package_digest(root: Path = PACKAGE_ROOT) -> str:
    """Return a sha256 of the source of every scoring-path module under ``root`` (the naa_guard package).

    Sample listing, decoding and fitting, conditioning, chunking and batching, the targets, the
    attacks, the stores and the ranks' protocol all shape a score or which sample gets it; only
    the modules in NOT_ON_SCORING_PATH are left out.
    """
    digest = hashlib.sha256()
    files = sorted(path for path in root.rglob("*.py") if not left_out_of_the_key(path.relative_to(root).as_posix()))
    for file in files:
        name = file.relative_to(root).as_posix()
        try:
            digest.update(name.encode() + b"\0" + file.read_bytes() + b"\0")
        except OSError:  # e.g. running from a zip: fall back on the version alone, never fail
            digest.update(f"{name}:unreadable:{sys.version}".encode())
    return digest.hexdigest()


def implementation_digest(attack: Attack) -> str:
    """Return a sha256 of the source code a score depends on: the package's scoring path and the attack's own module.

    In the cache key (and so in every chunk key), so a fix anywhere on the scoring path (decoding,
    fitting, batching, a target, an attack) invalidates stored scores even when the package
    version stays the same. An attack defined outside the package adds its own file.
    """
    digest = hashlib.sha256(package_digest().encode())
    attack_file = Path(inspect.getfile(type(attack))).resolve()
    if PACKAGE_ROOT not in attack_file.parents:
        try:
            digest.update(attack_file.name.encode() + b"\0" + attack_file.read_bytes())
        except OSError:
            digest.update(f"{attack_file.name}:unreadable:{sys.version}".encode())
    return digest.hexdigest()


def cached_scores_problem(entry: dict[str, np.ndarray], sets: dict[str, SampleSet]) -> str | None:
    """Return why a cache entry cannot stand for these sets' scores (None: it can).

    An entry must hold, per role, a 1-D float score array with one finite score per loaded sample
    and the indices of exactly those samples; anything else (a hand edit, a truncated copy, an
    entry of another version) would gate on scores that are not these samples'.
    """
    for role, samples in sets.items():
        scores, indices = entry.get(role), entry.get(f"{role}_indices")
        if scores is None or indices is None:
            return f"it holds no {role} scores or sample indices"
        scores = np.asarray(scores)
        if scores.ndim != 1 or scores.dtype.kind != "f":
            return f"its {role} scores have shape {scores.shape} and dtype {scores.dtype}, not one float per sample"
        if len(scores) != len(samples):
            return f"it holds {len(scores)} {role} scores for {len(samples)} {role} loaded"
        if not np.array_equal(np.asarray(indices), samples.indices):
            return f"its {role} sample indices differ from the {role} loaded"
        if not np.isfinite(scores).all():
            return f"it holds {int((~np.isfinite(scores)).sum())} non-finite {role} score(s)"
    return None


def sealed_entry(material: dict[str, Any], scores: dict[str, np.ndarray], sets: dict[str, SampleSet]) -> dict[str, np.ndarray]:
    """Return the score-cache entry of ``scores``: each role's scores and sample indices, sealed under ``material`` and the cache secret."""
    arrays = {**scores, **{f"{role}_indices": samples.indices for role, samples in sets.items()}}
    return seal(material, arrays, secret=cache_secret())


def open_entry(material: dict[str, Any], entry: dict[str, np.ndarray], sets: dict[str, SampleSet]) -> dict[str, np.ndarray] | str:
    """Return the scores by role of a score-cache entry read under ``material``; else why it cannot stand for these sets' scores.

    The entry must be sealed under exactly this key material with a digest under the cache secret
    (so an entry copied from another key, edited, or written by someone without the secret is
    refused), and hold one finite score per loaded sample (:func:`cached_scores_problem`).
    """
    opened = unseal(material, entry, secret=cache_secret())
    if isinstance(opened, str):
        return opened
    arrays, _ = opened
    problem = cached_scores_problem(arrays, sets)
    return problem if problem is not None else {role: np.asarray(arrays[role], dtype=np.float64) for role in sets}
