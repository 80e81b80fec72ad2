"""The audit runner: policy in, scores, metrics and gate verdicts out.

``audit(policy)`` lists the sample sets, checks them, scores every sample with every listed
attack (chunk by chunk, see :mod:`naa_guard.scoring`; per-sample seeded noise, so a score never
depends on the batch size or the number of processes), computes the leakage metrics and applies
the policy's gates. Scores can be cached by a content hash, so an unchanged model and data set
re-gate without loading the model, and saved chunk by chunk, so a killed audit resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from naa_guard.attacks import ATTACKS, Attack
from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.errors import PolicyError
from naa_guard.policy import Policy, Runtime, preflight
from naa_guard.result import AttackResult, AuditResult
from naa_guard.samples import SampleSet, list_samples, reuse_file_digests
from naa_guard.samples.keys import check_key_overlap
from naa_guard.samples.conditioning import apply_conditioning, check_encoder_conditioning, choose_conditioning, conditioning_warnings, describe_conditioning
from naa_guard.scoring.encodings import EncodingPlan, forgets_temporary_encodings
from naa_guard.scoring.keyedfiles import store_warnings
from naa_guard.scoring.keys import ScoreCache, cache_material, package_digest
from naa_guard.scoring.models import model_source
from naa_guard.scoring.reference import CalibratedScorer, calibrate, calibrated_name, reference_source
from naa_guard.scoring.runner import CHUNK_SAMPLES, ChunkRunner, LocalRunner, chunk_size, model_batch
from naa_guard.scoring.samplepass import summarize_sets
from naa_guard.scoring.scorer import Scorer
from naa_guard.targets import Target
from naa_guard.targets.emptytext import empty_text_probe
from naa_guard.targets.hubcache import model_origin
from naa_guard.targets.modelsize import explain_image_sizes
from naa_guard.tuning import CalibrationSplit, TuningResult, split_for_tuning, tune_attack
from naa_guard.verdict.baseline import baseline_path, check_fingerprint, compare, load_baseline
from naa_guard.verdict.control import check_control
from naa_guard.verdict.degenerate import explain
from naa_guard.verdict.epsilon import epsilon_lower_bound
from naa_guard.verdict.exposed import most_exposed
from naa_guard.verdict.fingerprint import audit_fingerprint, environment
from naa_guard.verdict.gatelist import match_gates
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import evaluate
from naa_guard.verdict.resolvable import check_policy_counts, check_sample_counts, describe_counts
from naa_guard.verdict.validity import ValidityReport, check_samples

if TYPE_CHECKING:
    from naa_guard.scoring.chunks import ChunkStore


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


@dataclass
class PreparedAudit:
    """What an audit has before any attack runs: the effective policy, checked sets, a scorer."""

    policy: Policy  # with the caller's runtime overrides applied
    limit: int | None
    members: SampleSet
    nonmembers: SampleSet
    control: SampleSet | None
    validity: ValidityReport
    scorer: Scorer
    conditioning: str | None  # as reports state it; None for an unconditional model
    conditioning_warnings: tuple[str, ...] = ()  # e.g. that the caption-free audit is the weak one

    reference: Scorer | None = None  # model.reference: every attack is also scored on it, and reported calibrated

    def measure(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, *, control: SampleSet | None = None, tuning: TuningResult | None = None) -> AttackResult:
        """Return one attack's scores and leakage on these sets (the control set scored beside them)."""
        return self.measure_all(attack, members, nonmembers, control=control, tuning=tuning, calibrated=False)[attack.name]

    def measure_all(
        self, attack: Attack, members: SampleSet, nonmembers: SampleSet, *, control: SampleSet | None = None, tuning: TuningResult | None = None, calibrated: bool = True,
    ) -> dict[str, AttackResult]:  # fmt: skip
        """Return the attack's result by name, and with a reference its calibrated result (``name/ref``) too."""
        started = time.perf_counter()
        sets = {"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})}
        scores, cached = self.scorer.score_sets(attack, sets, attack.name)
        results = {attack.name: self._result(attack.name, attack, scores, cached, time.perf_counter() - started, sets, tuning, attack.queries_per_sample)}
        if calibrated and self.reference is not None:
            started = time.perf_counter()
            ref_scores, ref_cached = self.reference.score_sets(attack, sets, f"{attack.name} (reference)")
            name = calibrated_name(attack.name)
            seconds = results[attack.name].seconds + time.perf_counter() - started
            # a calibrated score is known only to the resolution of its operands (naa_guard.verdict.degenerate)
            operands = {role: np.maximum(np.abs(scores[role]), np.abs(ref_scores[role])) for role in ("members", "nonmembers")}
            results[name] = self._result(name, attack, calibrate(scores, ref_scores), cached and ref_cached, seconds, sets, tuning, 2 * attack.queries_per_sample, operands)
        return results

    def encode_ahead(self, calibration: tuple[SampleSet, SampleSet] | None, members: SampleSet, nonmembers: SampleSet, control: SampleSet | None) -> None:
        """Store the encodings of every set the attacks will score (a tuned audit: the calibration part too), before any denoiser loads.

        Only a model that loads in parts (:mod:`naa_guard.scoring.models`) encodes here: its text
        encoders (and the reference's) then load once, and are released before the first transformer.
        """
        attacks = [ATTACKS[name](setting) for name, params in self.policy.attacks.items() for setting in (params.candidates if isinstance(params, AttackCandidates) else (params,))]
        groups = ([{"members": calibration[0], "nonmembers": calibration[1]}] if calibration is not None else [])
        groups.append({"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})})
        for scorer, label in ((self.scorer, "the attacks"), (self.reference, "the reference")):
            for sets in groups if scorer is not None else ():
                scorer.encode_ahead(attacks, sets, label)

    def _result(
        self, name: str, attack: Attack, scores: dict[str, Any], cached: bool, seconds: float, sets: dict[str, SampleSet], tuning: TuningResult | None, queries: int,
        magnitudes: dict[str, np.ndarray] | None = None,
    ) -> AttackResult:  # fmt: skip
        thresholds = self.policy.thresholds
        sizes = (magnitudes["members"], magnitudes["nonmembers"]) if magnitudes is not None else None
        leakage = evaluate(scores["members"], scores["nonmembers"], confidence=thresholds.confidence, seed=self.policy.runtime.seed, magnitudes=sizes)
        if leakage.degenerate is not None:  # every gate of this row is an error that names the attack and its setting
            leakage = replace(leakage, degenerate=explain(name, attack.describe(), leakage.degenerate))
        epsilon = epsilon_lower_bound(scores["members"], scores["nonmembers"], confidence=thresholds.confidence, delta=thresholds.delta)
        samples = {role: (s.indices, tuple(map(s.origin, range(len(s))))) for role, s in sets.items()}
        return AttackResult(
            name, attack.describe(), queries, seconds, scores["members"], scores["nonmembers"], leakage, cached,
            scores.get("control"), tuning, epsilon=epsilon, samples=samples,
        )  # fmt: skip


@explain_image_sizes  # an image of another size names the model config its size comes from
def prepare_audit(
    policy: Policy,
    *,
    device: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    score_cache: ScoreCache | None = None,
    target: Target | None = None,
    chunk_store: ChunkStore | None = None,
    runner: ChunkRunner | None = None,
    chunk_samples: int = CHUNK_SAMPLES,
    counts_first: bool = False,
) -> PreparedAudit:
    """Return the audit's inputs: sample sets listed once and checked (overlap, shift), and a scorer.

    The model is loaded here only for a custom loader (only the loaded target knows the image
    geometry); otherwise the scorer loads it on the first chunk that is not cached. ``counts_first``
    refuses counts the gates cannot resolve before the sets are checked (a ``--nproc`` launcher,
    whose checks stop where the sample pass begins); else an image that cannot be decoded is said first.
    """
    runtime = _runtime(policy, device=device, batch_size=batch_size)
    policy = policy.model_copy(update={"runtime": runtime})
    limit = limit if limit is not None else policy.data.limit
    seed = runtime.seed
    runner = runner or LocalRunner()

    models = model_source(policy, target)
    info = models.info

    def key(attack: Attack, sets: dict[str, SampleSet]) -> dict[str, Any] | None:
        return cache_material(info, policy, attack, sets["members"], sets["nonmembers"], limit, sets.get("control"))

    scorer = Scorer(policy, models, key, score_cache=score_cache, store=chunk_store, runner=runner, progress=progress, chunk_samples=chunk_samples)
    reference = None
    if (ref_models := reference_source(policy, models)) is not None:  # checked against the model before anything is scored
        ref_info, ref_policy = ref_models.info, ref_models.policy

        def ref_key(attack: Attack, sets: dict[str, SampleSet]) -> dict[str, Any] | None:
            return cache_material(ref_info, ref_policy, attack, sets["members"], sets["nonmembers"], limit, sets.get("control"))

        reference = Scorer(ref_policy, ref_models, ref_key, score_cache=score_cache, store=chunk_store, runner=runner, progress=progress, chunk_samples=chunk_samples)
    geometry = models.target() if target is None and info is None else (target or info)
    size, channels = geometry.sample_size, geometry.in_channels
    data = policy.data
    listing = partial(list_samples, size=size, channels=channels, limit=limit, fit=data.fit, caption_column=data.caption_column, allow_outside=data.allow_outside, image_column=data.image_column)
    if data.keys:  # a key in two sides' lists: an overlap error before any image is listed or scored
        check_key_overlap(data.keys)
    members = listing(data.members, seed=seed, role="members", split=data.split_for("members"), keys=data.keys_for("members"))
    nonmembers = listing(data.nonmembers, seed=seed + 1, role="nonmembers", split=data.split_for("nonmembers"), keys=data.keys_for("nonmembers"))
    control = None if data.control is None else listing(data.control, seed=seed + 2, role="control", split=data.split_for("control"), keys=data.keys_for("control"))
    listed = {"members": members, "nonmembers": nonmembers, **({"control": control} if control else {})}
    mode = choose_conditioning(policy.data.conditioning, policy.data.prompt, listed, getattr(geometry, "takes_text", False))
    if mode in ("caption", "prompt"):  # deeper than the string: texts the text encoder receives as the empty caption
        probe = empty_text_probe(models.ready, info, policy.model.allow_pickle)
        mode = check_encoder_conditioning(policy.data.conditioning, mode, policy.data.prompt, listed, probe)
    members, nonmembers = (apply_conditioning(samples, mode, policy.data.prompt) for samples in (members, nonmembers))
    control = apply_conditioning(control, mode, policy.data.prompt) if control is not None else None
    # before any attack; streams every image once, so an undecodable one fails here
    sets = {"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})}
    summarizer = partial(
        summarize_sets, runner, models, chunk_samples=chunk_size(model_batch(runtime.batch_size), chunk_samples), encodings=_first_pass_encodings(policy, scorer, sets),
        step=model_batch(runtime.batch_size), summary_root=chunk_store.root / "summaries" if chunk_store is not None else None,
        summary_material={"code": package_digest(), "size": size, "channels": channels, "fit": data.fit},
    )  # fmt: skip
    if counts_first:  # a --nproc launcher: the sample pass is the ranks' work, the count refusal is said before it
        _checked_counts(policy, limit, members, nonmembers, control)
    with store_warnings(scorer.cache_warnings):  # a stored summary or encoding ignored: said in the audit's warnings
        validity = check_samples(members, nonmembers, control, policy.checks, seed=seed, summarizer=summarizer)
    return PreparedAudit(policy, limit, members, nonmembers, control, validity, scorer, describe_conditioning(mode, policy.data.prompt), tuple(conditioning_warnings(mode)), reference)


def _checked_counts(policy: Policy, limit: int | None, members: SampleSet, nonmembers: SampleSet, control: SampleSet | None) -> tuple[CalibrationSplit | None, list[str]]:
    """Return the tuning split (None: no attack is tuned) and the count warnings; raise when the counts gated on refuse.

    Needs only the listings: run before the sample pass too, so a refusal comes before any image is decoded.
    """
    split = None
    if any(isinstance(params, AttackCandidates) for params in policy.attacks.values()):
        split = split_for_tuning(members, nonmembers, policy.tune.fraction, policy.runtime.seed)
        members, nonmembers = split.evaluation
    how = describe_counts(limit, split is not None, policy.tune.fraction)
    return split, check_sample_counts(policy, len(members), len(nonmembers), how=how, tuned=split is not None, n_control=len(control) if control is not None else None, limit=limit)


def _first_pass_encodings(policy: Policy, scorer: Scorer, sets: dict[str, SampleSet]) -> EncodingPlan | None:
    """Return the encoding plan the sample pass follows: the first attack's, when it will score these sets on the model.

    Then the sample pass encodes each chunk while it has it decoded, and no attack reads an image
    again. A tuned audit scores parts of the sets (other chunks), and a cached attack nothing: then None.
    """
    if not policy.attacks or any(isinstance(params, AttackCandidates) for params in policy.attacks.values()):
        return None
    name, params = next(iter(policy.attacks.items()))
    return scorer.encoding_plan(sets) if scorer.scores_missing(ATTACKS[name](params), sets) else None


def _tuned_rows(prepared: PreparedAudit, name: str, candidates: AttackCandidates, split: CalibrationSplit, control: SampleSet | None) -> dict[str, AttackResult]:
    """Return a tuned attack's rows, each tuned on its own scores (naa_guard.tuning: tuning never crosses rows).

    The raw row ``name`` is chosen on the model's scores; with a reference, ``name/ref`` is chosen
    on the calibrated scores, and each row carries its own candidate table.
    """
    members, nonmembers = split.evaluation
    params, tuning = tune_attack(ATTACKS[name], candidates, split, prepared.scorer, scores="raw")
    if prepared.reference is None:
        return {name: prepared.measure(ATTACKS[name](params), members, nonmembers, control=control, tuning=tuning)}
    ref_params, ref_tuning = tune_attack(ATTACKS[name], candidates, split, CalibratedScorer(prepared.scorer, prepared.reference), scores="calibrated")
    ref_name = calibrated_name(name)
    if ref_params == params:  # one scoring serves both rows; each keeps its own table
        rows = prepared.measure_all(ATTACKS[name](params), members, nonmembers, control=control, tuning=tuning)
        return {name: rows[name], ref_name: replace(rows[ref_name], tuning=ref_tuning)}
    raw = prepared.measure(ATTACKS[name](params), members, nonmembers, control=control, tuning=tuning)
    calibrated = prepared.measure_all(ATTACKS[name](ref_params), members, nonmembers, control=control, tuning=ref_tuning)[ref_name]
    return {name: raw, ref_name: calibrated}


@forgets_temporary_encodings  # an audit without a store keeps its encodings in a folder of its own until it ends
@reuse_file_digests()  # every attack's cache key and the fingerprint hash the same files: read them once
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
    chunk_store: ChunkStore | None = None,
    runner: ChunkRunner | None = None,
    chunk_samples: int = CHUNK_SAMPLES,
    checked: bool = False,
) -> AuditResult:
    """Return the audit of ``policy``: every listed attack scored, measured and gated.

    ``device``, ``batch_size`` and ``limit`` override the policy's runtime and data settings;
    ``target`` replaces loading the policy's model (used by tests). Images are decoded and scored
    ``chunk_samples`` at a time (rounded to whole batches); ``chunk_store`` keeps scores chunk by
    chunk so a killed audit resumes; ``runner`` runs the chunks (default: here; see
    :mod:`naa_guard.scoring.distributed` for the ranks of a process group). Before any attack runs, the
    sets are checked for overlap and distribution shift; with ``data.control`` the control set
    is scored too and must look like the non-members. A failed check raises AuditInvalidError
    (naa_guard.verdict.validity). ``baseline`` (else the policy's ``baseline``) names a previous report.json:
    a mismatch raises BaselineError, a rise beyond ``thresholds.max_increase`` fails the gate. When an attack lists candidate settings, every attack is reported and
    gated on the evaluation part of a seeded calibration split (see :mod:`naa_guard.tuning`).
    ``checked``: the caller already ran :func:`naa_guard.policy.preflight` with the count check on
    this policy and limit (the CLI and the plugin do, before the engine's imports): it is not repeated.
    """
    baseline = baseline_path(policy, baseline)  # before any scoring: a missing baseline fails fast
    baseline_report = load_baseline(baseline) if baseline is not None else None  # read and recomputed before any scoring
    if not checked:  # every problem found without a model (missing sources or configs, gates the listed counts cannot resolve), at once
        preflight(policy, limit if limit is not None else policy.data.limit, counts=check_policy_counts, model=target is None)
    prepared = prepare_audit(
        policy, device=device, batch_size=batch_size, limit=limit, progress=progress, score_cache=score_cache, target=target,
        chunk_store=chunk_store, runner=runner, chunk_samples=chunk_samples,
        counts_first=getattr(runner, "counts_first", False),
    )  # fmt: skip
    policy, scorer, seed = prepared.policy, prepared.scorer, prepared.policy.runtime.seed
    members, nonmembers, control, validity = prepared.members, prepared.nonmembers, prepared.control, prepared.validity

    fingerprint = audit_fingerprint(policy, scorer.info, prepared.members, prepared.nonmembers, prepared.conditioning)
    if baseline_report is not None:
        check_fingerprint(baseline_report, fingerprint, baseline)  # before any scoring

    split, count_warnings = _checked_counts(policy, prepared.limit, members, nonmembers, control)
    if split is not None:
        members, nonmembers = split.evaluation
    prepared.encode_ahead(split.calibration if split is not None else None, members, nonmembers, control)

    results: dict[str, AttackResult] = {}
    for name, params in policy.attacks.items():
        if isinstance(params, AttackCandidates) and split is not None:
            results.update(_tuned_rows(prepared, name, params, split, control))
        else:
            results.update(prepared.measure_all(ATTACKS[name](params), members, nonmembers, control=control))
    if control is not None:
        paired = {name: (result.control_scores, result.nonmember_scores) for name, result in results.items()}
        validity.control = check_control(paired, control, margin=policy.checks.control_margin, confidence=policy.thresholds.confidence, seed=seed)
    warnings = ["scores were not cached: a custom loader without model.path gives naa-guard no model identity to key them by"] if scorer.uncacheable else []
    warnings += prepared.reference.cache_warnings if prepared.reference is not None else []
    warnings += prepared.conditioning_warnings
    warnings += [note for samples in (prepared.members, prepared.nonmembers, control) if samples is not None for note in samples.notes]
    warnings += scorer.cache_warnings + count_warnings

    gates = [gate for name, result in results.items() for gate in evaluate_gates(policy, name, result.leakage, result.epsilon)]
    if baseline_report is not None and baseline is not None:
        thresholds = policy.thresholds
        gates = compare(gates, results, baseline_report, baseline, thresholds.max_increase, decision=thresholds.decision, confidence=thresholds.confidence, seed=seed)
    gates = match_gates(policy, gates)  # exactly the rows every face lists (naa_guard.verdict.gatelist), else no verdict
    device = str(scorer.models.ready.device) if scorer.models.ready is not None else None
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
        model_loaded=scorer.model_loaded or (prepared.reference is not None and prepared.reference.model_loaded),
        warnings=warnings + [gate.warning for gate in gates if gate.warning],
        checks=validity,
        conditioning=prepared.conditioning,
        exposed=most_exposed(results, members, policy.report.exposed),
        fingerprint=fingerprint,
        environment=environment(str(policy.source) if policy.source else None, device, policy.runtime.dtype, seed) | model_origin(policy.model),
    )
