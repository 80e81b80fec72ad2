"""The audit runner: policy in, scores, metrics and gate verdicts out.

``audit(policy)`` loads the sample sets, scores every sample with every listed attack (batched,
under ``inference_mode``, with per-sample seeded noise so a score never depends on the batch
size), computes the leakage metrics and applies the policy's gates. Scores can be cached by a
content hash, so an unchanged model and data set re-gate without loading the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from naa_guard import __version__
from naa_guard.attacks import ATTACKS, Attack
from naa_guard.checks import ValidityReport, check_control, check_samples
from naa_guard.conditioning import apply_conditioning, choose_conditioning, describe_conditioning
from naa_guard.data import SampleSet, load_samples
from naa_guard.errors import NonFiniteScoreError, PolicyError, TargetError
from naa_guard.gates import GateResult, check_sample_counts, evaluate_gates
from naa_guard.baseline import baseline_path, compare, load_baseline
from naa_guard.epsilon import EpsilonBound, epsilon_lower_bound
from naa_guard.exposed import ExposedMembers, most_exposed
from naa_guard.fingerprint import audit_fingerprint, environment
from naa_guard.metrics import LeakageReport, evaluate
from naa_guard.policy import Policy, Runtime
from naa_guard.scorecache import ScoreCache, cache_key, cached_scores_problem
from naa_guard.targets import AnyModelInfo, Target, as_target, load_target, probe_target, read_model_info, resolve_device
from naa_guard.targets.custom import load_custom_target
from naa_guard.tuning import AttackCandidates, TuningResult, split_for_tuning, tune_attack

if TYPE_CHECKING:
    from collections.abc import Iterator

WORST_CASE_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr")

@dataclass(frozen=True)
class AttackResult:
    """One attack's scores and leakage metrics."""

    name: str
    params: dict[str, Any]
    queries_per_sample: int
    seconds: float
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    leakage: LeakageReport
    cached: bool = False
    control_scores: np.ndarray | None = None  # the null-control set's scores, when data.control is set
    tuning: TuningResult | None = None  # set when the policy listed candidate settings
    epsilon: EpsilonBound | None = None  # the empirical epsilon lower bound (naa_guard.epsilon)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: headline metrics first, then the full leakage report."""
        metrics = self.leakage.metrics
        return {
            "auc": self.leakage.auc,
            "leak_auc": self.leakage.leak_auc,
            "direction": self.leakage.direction,
            "auc_ci": list(metrics["auc"].ci),
            "tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"].value,
            "tpr_at_0_1pct_fpr": metrics["tpr_at_0_1pct_fpr"].value,
            "asr": metrics["asr"].value,
            "queries_per_sample": self.queries_per_sample,
            "params": self.params,
            "seconds": self.seconds,
            "cached": self.cached,
            "metrics": self.leakage.to_dict(),
            **({"epsilon": self.epsilon.to_dict()} if self.epsilon is not None else {}),
            **({"tuning": self.tuning.to_dict()} if self.tuning is not None else {}),
        }


@dataclass
class AuditResult:
    """Everything an audit produced: per-attack scores and metrics, and gate verdicts."""

    name: str
    policy_path: str | None
    n_members: int
    n_nonmembers: int
    attacks: dict[str, AttackResult]
    gates: list[GateResult]
    device: str | None
    dtype: str
    seed: int
    limit: int | None
    model_loaded: bool
    warnings: list[str] = field(default_factory=list)
    checks: ValidityReport | None = None  # overlap, distribution shift and null control results
    conditioning: str | None = None  # the text condition a text-to-image model's queries got
    exposed: ExposedMembers | None = None  # the worst-case attack's most-exposed members
    fingerprint: dict[str, Any] | None = None  # what a baseline must share (naa_guard.fingerprint)
    environment: dict[str, Any] = field(default_factory=dict)  # versions, device, dtype, seed, policy hash

    @property
    def passed(self) -> bool:
        """Return True when there is at least one gate and every gate passed (no gate is never a pass)."""
        return bool(self.gates) and all(gate.passed for gate in self.gates)

    @property
    def errored(self) -> bool:
        """Return True when some gate could not be decided."""
        return any(gate.status == "error" for gate in self.gates)

    def worst_case(self) -> dict[str, dict[str, Any]]:
        """Return, per metric, the attack that leaks the most: its name, value, CI and direction.

        For ``auc`` the value is the leak AUC; ties go to the attack listed first.
        """
        if not self.attacks:
            return {}
        worst: dict[str, dict[str, Any]] = {}
        for metric in WORST_CASE_METRICS:
            name = max(self.attacks, key=lambda attack: self.attacks[attack].leakage.metrics[metric].value)
            measured = self.attacks[name].leakage.metrics[metric]
            worst[metric] = {
                "attack": name, "value": measured.value, "ci": list(measured.ci),
                "direction": measured.direction, "resolvable": measured.resolvable,
            }  # fmt: skip
        return worst

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON report."""
        return {
            "name": self.name,
            "policy": self.policy_path,
            "naa_guard_version": __version__,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
            "limit": self.limit,
            "device": self.device,
            "dtype": self.dtype,
            "seed": self.seed,
            "conditioning": self.conditioning,
            "attacks": {name: result.to_dict() for name, result in self.attacks.items()},
            "worst_case": self.worst_case(),
            "gates": [gate.to_dict() for gate in self.gates],
            "warnings": self.warnings,
            "checks": self.checks.to_dict() if self.checks is not None else None,
            "exposed": self.exposed.to_dict() if self.exposed is not None else None,
            "fingerprint": self.fingerprint,
            "environment": self.environment,
            "passed": self.passed,
        }


def _batches(samples: SampleSet, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(samples), batch_size):
        yield samples.images[start : start + batch_size], samples.indices[start : start + batch_size]


def score_samples(attack: Attack, target: Target, samples: SampleSet, role: str, *, batch_size: int, seed: int, progress: Any = None) -> np.ndarray:
    """Return the attack's float64 score of every sample in the set, batch by batch."""
    import torch

    from naa_guard.attacks.common import sample_keys

    target = as_target(target)
    scores: list[np.ndarray] = []
    offset = 0
    for images, indices in _batches(samples, batch_size):
        pixels = torch.from_numpy(np.ascontiguousarray(images)).to(target.device)
        keys = sample_keys(role, indices)
        try:
            with torch.inference_mode():
                x0, cond = target.encode(pixels, samples.captions[offset : offset + len(indices)])
                batch_scores = attack.score(target, x0, keys, seed, cond).detach().to("cpu", torch.float64).numpy()
        except NonFiniteScoreError as exc:
            rows = getattr(exc, "batch_rows", None) or range(len(indices))
            names = ", ".join(samples.names[offset + row] for row in list(rows)[:5])
            raise NonFiniteScoreError(f"attack {attack.name}, {role} sample(s) {names}{' ...' if len(rows) > 5 else ''}: {exc}") from None
        bad = np.flatnonzero(~np.isfinite(batch_scores))
        if bad.size:
            names = [samples.names[offset + i] for i in bad[:5]]
            raise NonFiniteScoreError(
                f"attack {attack.name} gave non-finite scores for {bad.size} {role} sample(s), e.g. {', '.join(names)}. "
                f"The model's predictions are degenerate for these images; check the checkpoint, or use runtime.dtype: float32."
            )
        scores.append(batch_scores)
        offset += len(indices)
        if progress is not None:
            progress.update(len(indices))
    return np.concatenate(scores)


def _progress(total: int, description: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


def _check_timesteps(attack: Attack, target: Target) -> None:
    steps = len(target.alphas_cumprod)
    if attack.max_timestep >= steps:
        raise TargetError(
            f"attack {attack.name} queries timestep {attack.max_timestep}, but the model's schedule has "
            f"only {steps} timesteps (0..{steps - 1}). Lower the attack's timestep in attacks.{attack.name}."
        )


def _runtime(policy: Policy, *, device: str | None, batch_size: int | None) -> Runtime:
    """Return the policy's runtime section with the caller's overrides, validated like the policy."""
    overrides = {key: value for key, value in {"device": device, "batch_size": batch_size}.items() if value is not None}
    try:
        return Runtime.model_validate({**policy.runtime.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"runtime.{'.'.join(map(str, e['loc']))} = {e['input']!r}: {str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
        raise PolicyError(
            f"invalid runtime override ({problems}). Fix the --device / --batch-size option (or the "
            f"argument given to audit()); `naa-guard schema` lists the allowed values."
        ) from None


def _load_model(policy: Policy, info: AnyModelInfo | None) -> Target:
    """Return the policy's model (diffusers folder or custom loader), probed with one test batch."""
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
    return target


class _Scorer:
    """Scores attacks on sample sets: from the cache when it can, else on the model, loaded once."""

    def __init__(self, policy: Policy, info: AnyModelInfo | None, limit: int | None, score_cache: ScoreCache | None, target: Target | None, progress: bool) -> None:
        self.policy, self.info, self.limit, self.score_cache, self.progress = policy, info, limit, score_cache, progress
        self.target = as_target(target) if target is not None else None
        self.model_loaded = False
        self.uncacheable = False  # a custom loader without model.path: no model identity to key scores by
        self.cache_warnings: list[str] = []  # bad entries recomputed, failed writes

    def load(self) -> Target:
        """Return the target, loading (and probing) the policy's model on first use."""
        if self.target is None:
            self.target, self.model_loaded = _load_model(self.policy, self.info), True
        return self.target

    def score_sets(self, attack: Attack, sets: dict[str, SampleSet], label: str) -> tuple[dict[str, np.ndarray], bool]:
        """Return each set's scores by role ("members", "nonmembers", "control"), and whether cached."""
        runtime = self.policy.runtime
        key = None
        if self.score_cache is not None:
            key = cache_key(self.info, self.policy, attack, sets["members"], sets["nonmembers"], self.limit, sets.get("control"))
            self.uncacheable = self.uncacheable or key is None
        cached = self.score_cache.get(key) if self.score_cache is not None and key is not None else None
        if cached is not None:
            problem = cached_scores_problem(cached, sets)
            if problem is None:
                return {role: np.asarray(cached[role], dtype=np.float64) for role in sets}, True
            self.cache_warnings.append(f"score cache entry {key} ({label}) was ignored and recomputed: {problem}")
        target = self.load()
        _check_timesteps(attack, target)
        with _progress(sum(len(samples) for samples in sets.values()), f"{self.policy.name}: {label}", self.progress) as bar:
            scores = {role: score_samples(attack, target, samples, role, batch_size=runtime.batch_size, seed=runtime.seed, progress=bar) for role, samples in sets.items()}
        if self.score_cache is not None and key is not None:
            entry = {**scores, **{f"{role}_indices": samples.indices for role, samples in sets.items()}}
            try:
                self.score_cache.put(key, entry)
            except OSError as exc:  # a read-only or full cache folder costs time, never the verdict
                self.cache_warnings.append(f"could not write the score cache entry {key} ({label}): {exc}; the next run recomputes it")
        return scores, False

    def __call__(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, label: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (member scores, non-member scores, whether cached): the tuning's score function."""
        scores, cached = self.score_sets(attack, {"members": members, "nonmembers": nonmembers}, label)
        return scores["members"], scores["nonmembers"], cached


@dataclass
class PreparedAudit:
    """What an audit has before any attack runs: the effective policy, checked sets, a scorer."""

    policy: Policy  # with the caller's runtime overrides applied
    limit: int | None
    members: SampleSet
    nonmembers: SampleSet
    control: SampleSet | None
    validity: ValidityReport
    scorer: _Scorer
    conditioning: str | None  # as reports state it; None for an unconditional model

    def measure(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, *, control: SampleSet | None = None, tuning: TuningResult | None = None) -> AttackResult:
        """Return one attack's scores and leakage on these sets (the control set scored beside them)."""
        started = time.perf_counter()
        sets = {"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})}
        scores, cached = self.scorer.score_sets(attack, sets, attack.name)
        seconds = time.perf_counter() - started
        thresholds = self.policy.thresholds
        leakage = evaluate(scores["members"], scores["nonmembers"], confidence=thresholds.confidence, seed=self.policy.runtime.seed)
        epsilon = epsilon_lower_bound(scores["members"], scores["nonmembers"], confidence=thresholds.confidence, delta=thresholds.delta)
        return AttackResult(attack.name, attack.describe(), attack.queries_per_sample, seconds, scores["members"], scores["nonmembers"], leakage, cached, scores.get("control"), tuning, epsilon)


def prepare_audit(
    policy: Policy,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    score_cache: ScoreCache | None = None,
    target: Target | None = None,
) -> PreparedAudit:
    """Return the audit's inputs: sample sets loaded once and checked (overlap, shift), and a scorer.

    The model is loaded here only for a custom loader (only the loaded target knows the image
    geometry); otherwise the scorer loads it on the first cache miss.
    """
    runtime = _runtime(policy, device=device, batch_size=batch_size)
    policy = policy.model_copy(update={"runtime": runtime})
    limit = limit if limit is not None else policy.data.limit
    seed = runtime.seed

    model = policy.model
    info = read_model_info(model.path, model.unet_subfolder, lora=model.lora, lora_scale=model.lora_scale) if model.loader is None else None
    scorer = _Scorer(policy, info, limit, score_cache, target, progress)
    geometry = scorer.load() if target is None and info is None else (target or info)
    size, channels = geometry.sample_size, geometry.in_channels
    fit = policy.data.fit
    members = load_samples(policy.data.members, size=size, channels=channels, limit=limit, seed=seed, role="members", fit=fit)
    nonmembers = load_samples(policy.data.nonmembers, size=size, channels=channels, limit=limit, seed=seed + 1, role="nonmembers", fit=fit)
    control = None if policy.data.control is None else load_samples(policy.data.control, size=size, channels=channels, limit=limit, seed=seed + 2, role="control", fit=fit)
    mode = choose_conditioning(policy.data, {"members": members, "nonmembers": nonmembers, **({"control": control} if control else {})}, getattr(geometry, "takes_text", False))
    members, nonmembers = (apply_conditioning(samples, mode, policy.data.prompt) for samples in (members, nonmembers))
    control = apply_conditioning(control, mode, policy.data.prompt) if control is not None else None
    validity = check_samples(members, nonmembers, control, policy.checks, seed=seed)  # model-free, on the pixels: before any attack
    return PreparedAudit(policy, limit, members, nonmembers, control, validity, scorer, describe_conditioning(mode, policy.data.prompt))


def audit(
    policy: Policy,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    score_cache: ScoreCache | None = None,
    target: Target | None = None,
    baseline: Path | None = None,
) -> AuditResult:
    """Return the audit of ``policy``: every listed attack scored, measured and gated.

    ``device``, ``batch_size`` and ``limit`` override the policy's runtime and data settings;
    ``target`` replaces loading the policy's model (used by tests). Before any attack runs, the
    sets are checked for overlap and distribution shift; with ``data.control`` the control set
    is scored too and must look like the non-members. A failed check raises AuditInvalidError
    (naa_guard.checks). ``baseline`` (else the policy's ``baseline``) names a previous report.json:
    a mismatch raises BaselineError, a rise beyond ``thresholds.max_increase`` fails the gate. When an attack lists candidate settings, every attack is reported and
    gated on the evaluation part of a seeded calibration split (see :mod:`naa_guard.tuning`).
    """
    baseline = baseline_path(policy, baseline)  # before any scoring: a missing baseline fails fast
    prepared = prepare_audit(policy, device=device, batch_size=batch_size, limit=limit, progress=progress, score_cache=score_cache, target=target)
    policy, scorer, seed = prepared.policy, prepared.scorer, prepared.policy.runtime.seed
    members, nonmembers, control, validity = prepared.members, prepared.nonmembers, prepared.control, prepared.validity

    split = None
    if any(isinstance(params, AttackCandidates) for params in policy.attacks.values()):
        split = split_for_tuning(members, nonmembers, policy.tune.fraction, seed)
        members, nonmembers = split.evaluation
    how = (f" after limit {prepared.limit}" if prepared.limit is not None else "") + (f" and the tuning split (tune.fraction {policy.tune.fraction})" if split else "")
    check_sample_counts(policy, len(members), len(nonmembers), how=how, tuned=split is not None, n_control=len(control) if control is not None else None)  # before any scoring

    results: dict[str, AttackResult] = {}
    for name, params in policy.attacks.items():
        tuning = None
        if isinstance(params, AttackCandidates) and split is not None:
            params, tuning = tune_attack(ATTACKS[name], params, split, scorer)
        results[name] = prepared.measure(ATTACKS[name](params), members, nonmembers, control=control, tuning=tuning)
    if control is not None:
        paired = {name: (result.control_scores, result.nonmember_scores) for name, result in results.items()}
        validity.control = check_control(paired, control, margin=policy.checks.control_margin, confidence=policy.thresholds.confidence, seed=seed)
    warnings = ["scores were not cached: a custom loader without model.path gives naa-guard no model identity to key them by"] if scorer.uncacheable else []
    warnings += [note for samples in (prepared.members, prepared.nonmembers, control) if samples is not None for note in samples.notes]
    warnings += scorer.cache_warnings

    gates = [gate for name, result in results.items() for gate in evaluate_gates(policy, name, result.leakage, result.epsilon)]
    fingerprint = audit_fingerprint(policy, scorer.info, prepared.members, prepared.nonmembers)
    if baseline is not None:
        gates = compare(gates, fingerprint, load_baseline(baseline), baseline, policy.thresholds.max_increase)
    device = str(scorer.target.device) if scorer.target is not None else None
    return AuditResult(
        name=policy.name,
        policy_path=str(policy.source) if policy.source else None,
        n_members=len(members),
        n_nonmembers=len(nonmembers),
        attacks=results,
        gates=gates,
        device=device,
        dtype=policy.runtime.dtype,
        seed=seed,
        limit=prepared.limit,
        model_loaded=scorer.model_loaded,
        warnings=warnings + [gate.warning for gate in gates if gate.warning],
        checks=validity,
        conditioning=prepared.conditioning,
        exposed=most_exposed(results, members, policy.report.exposed),
        fingerprint=fingerprint,
        environment=environment(str(policy.source) if policy.source else None, device, policy.runtime.dtype, seed),
    )
