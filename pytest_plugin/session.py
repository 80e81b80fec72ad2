"""The per-session audit store: one audit per policy, shared by its gate items and the fixtures.

The first gate item of a policy to run (or the first ``naa_audit`` call) runs the audit; every
other item of that policy reads the stored result, or re-raises the stored error, so a policy is
scored at most once per session (and per xdist worker: the scheduler keeps a policy on one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from naa_guard.errors import DistributedError, NaaGuardError, OutputError
from naa_guard.policy import Policy, load_policy
from naa_guard.verdict.gatelist import match_gates

if TYPE_CHECKING:
    from naa_guard.result import AuditResult
    from naa_guard.scoring.chunks import ChunkStore
    from naa_guard.scoring.keys import ScoreCache

CACHE_NAME = "naa-guard"
CHUNK_CACHE_NAME = "naa-guard-chunks"


@dataclass(frozen=True)
class Settings:
    """The run-wide choices made on the command line or in the ini file."""

    device: str | None
    batch_size: int | None
    quick: int | None
    report_dir: Path | None
    strict: bool
    use_cache: bool
    baseline: Path | None = None
    strict_reason: str = "--naa-strict"  # what made the run strict, for the error message
    nproc: int = 1
    mlflow: bool = False

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Return the settings of this run: command-line options win over ini options."""
        strict, strict_reason = _strict(config)
        return cls(
            device=config.getoption("naa_device") or config.getini("naa_device") or None,
            batch_size=config.getoption("naa_batch_size"),
            quick=config.getoption("naa_quick"),
            report_dir=_report_dir(config),
            strict=strict,
            strict_reason=strict_reason,
            use_cache=not config.getoption("naa_no_cache"),
            baseline=(config.invocation_params.dir / config.getoption("naa_baseline")).resolve() if config.getoption("naa_baseline") else None,
            nproc=config.getoption("naa_nproc") or 1,
            mlflow=bool(config.getoption("naa_mlflow")),
        )


def running_in_ci() -> bool:
    """Return True where the ``CI`` environment variable is set (GitHub Actions, GitLab, ... set CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _strict(config: pytest.Config) -> tuple[bool, str]:
    """Return whether a missing environment is an error: options, then the ini, then strict where $CI is set.

    A CI job that lost its GPU must not go green on skipped gates, so CI is strict unless told otherwise.
    """
    if config.getoption("naa_strict") and config.getoption("naa_no_strict"):
        raise pytest.UsageError("--naa-strict and --naa-no-strict contradict each other; give one of them.")
    if config.getoption("naa_strict") or config.getoption("naa_no_strict"):
        return bool(config.getoption("naa_strict")), "--naa-strict"
    ini = config.getini("naa_strict")
    if ini not in (None, []):  # pytest < 8 returns [] for an unset ini key without a default
        return bool(ini), "naa_strict = true"
    return running_in_ci(), "$CI is set, so strict is the default; --naa-no-strict opts out"


def _report_dir(config: pytest.Config) -> Path | None:
    """Return the report folder: ``--naa-report`` (relative to the invocation dir) or the ini's."""
    if config.getoption("naa_report"):
        return (config.invocation_params.dir / config.getoption("naa_report")).resolve()
    if config.getini("naa_report_dir"):
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / config.getini("naa_report_dir")).resolve()
    return None


def quick_note(per_side: int) -> str:
    """Return the mark that tells a reader a result came from a ``--naa-quick`` subsample."""
    return f"[quick check: {per_side} per side, not a release verdict]"


class AuditSession:
    """Loads each policy once and audits it once; every consumer in the session shares both."""

    def __init__(self, settings: Settings, pytest_cache: pytest.Cache | None) -> None:
        self.settings = settings
        self._pytest_cache = pytest_cache  # None under -p no:cacheprovider: run without a cache
        self._policies: dict[Path, Policy] = {}
        self._outcomes: dict[Path, AuditResult | NaaGuardError] = {}
        self._report_dirs: dict[Path, Path] = {}
        self._cache_problems: list[str] = []  # the running audit's: a cache folder that could not be used

    def policy(self, path: Path) -> Policy:
        """Return the validated policy read from ``path`` (loaded once per session)."""
        key = Path(path).resolve()
        if key not in self._policies:
            self._policies[key] = load_policy(key)
        return self._policies[key]

    def limit_for(self, policy: Policy) -> int | None:
        """Return the per-side sample limit the audit of ``policy`` uses (None: the policy's own)."""
        quick = self.settings.quick
        if quick is None:
            return None
        return min(quick, policy.data.limit) if policy.data.limit else quick

    def outcome(self, policy: Policy) -> AuditResult | NaaGuardError:
        """Return the audit of ``policy`` or the error that stopped it, running it on first use."""
        key = Path(policy.source or policy.name).resolve()
        if key not in self._outcomes:
            self._outcomes[key] = self._run(policy)
        return self._outcomes[key]

    def result(self, policy: Policy) -> AuditResult:
        """Return the audit of ``policy``, running it on first use; re-raise a stored failure."""
        outcome = self.outcome(policy)
        if isinstance(outcome, NaaGuardError):
            raise outcome
        return outcome

    def report_dir(self, policy: Policy) -> Path | None:
        """Return the folder the reports of ``policy`` were written to, if any."""
        return self._report_dirs.get(Path(policy.source or policy.name).resolve())

    def _run(self, policy: Policy) -> AuditResult | NaaGuardError:
        from naa_guard.policy import preflight
        from naa_guard.reports.write import check_output
        from naa_guard.verdict.baseline import baseline_path
        from naa_guard.verdict.resolvable import check_policy_counts

        settings = self.settings
        target = self._choose_report_dir(policy)
        where = "--naa-report" if settings.report_dir is not None else f"{policy.source}: report.dir"
        # as in the CLI: a requested report is part of the gate's output, checked first; never the report this run writes as baseline
        outputs: list[Callable[[], object]] = [partial(check_output, target, folder=True, where=where)] if target is not None else []
        outputs.append(partial(baseline_path, policy, settings.baseline, (target / "report.json" if target is not None else None,)))
        if settings.mlflow:
            from naa_guard.reports.mlflowlog import require_mlflow

            outputs.append(require_mlflow)
        try:  # every model-free problem at once, as the CLI reports them, before the engine's imports
            preflight(policy, self.limit_for(policy) or policy.data.limit, counts=check_policy_counts, also=outputs)
        except NaaGuardError as exc:
            return exc
        from naa_guard.audit import audit
        from naa_guard.reports.write import write_reports

        self._cache_problems = []
        try:
            if settings.nproc > 1:  # a refusal, or every score stored: no torchrun started
                result = self._regate_here(policy) or self._run_distributed(policy)
            else:
                result = audit(
                    policy, device=settings.device, batch_size=settings.batch_size, limit=self.limit_for(policy),
                    progress=False, score_cache=self._score_cache(), chunk_store=self._chunk_store(), baseline=settings.baseline, checked=True,  # _run preflighted it
                )  # fmt: skip
            result.gates = match_gates(policy, result.gates)  # exactly the collected items' rows (a distributed result too), else every item errors
        except NaaGuardError as exc:
            return exc
        result.warnings += dict.fromkeys(self._cache_problems)  # in the report and the summary, like the CLI's
        if target is not None:
            try:
                write_reports(result, target, plots=True)
            except OSError as exc:  # as in the CLI: no verdict without the report that was asked for
                return OutputError(f"{where} {target}: cannot write the report: {exc.strerror or exc} ({exc.filename or target}). Fix: choose a writable path; no verdict is given without its report.")
            self._report_dirs[Path(policy.source or policy.name).resolve()] = target
        if settings.mlflow:  # as a requested report: no verdict without it
            from naa_guard.reports.mlflowlog import log_result

            try:
                log_result(result, target, nested=True)
            except NaaGuardError as exc:
                return exc
        return result

    def warnings(self, policy: Policy) -> list[str]:
        """Return the warnings of the audit of ``policy`` (skipped files, recomputed cache entries, ...); none if it did not finish."""
        outcome = self._outcomes.get(Path(policy.source or policy.name).resolve())
        return [] if outcome is None or isinstance(outcome, NaaGuardError) else list(outcome.warnings)

    def _regate_here(self, policy: Policy) -> AuditResult | None:
        """Return the audit of ``policy`` run here without the model, as torchrun's rank 0 would run it; None when the ranks must run it.

        Every check that needs no model refuses here, before torchrun starts; with every score stored it re-gates here.
        """
        from naa_guard.audit import audit
        from naa_guard.scoring.modelguard import ModelNeeded, model_stays_unloaded
        from naa_guard.scoring.storedfirst import launcher_runner, rank0_device

        settings = self.settings
        store = self._chunk_store()  # the ranks' --cache (_run_distributed); no score cache, as on rank 0
        try:
            with model_stays_unloaded():
                return audit(
                    policy, device=rank0_device(settings.device or policy.runtime.device), batch_size=settings.batch_size, limit=self.limit_for(policy),
                    progress=False, chunk_store=store, runner=launcher_runner(policy, store.root if store is not None else None), baseline=settings.baseline, checked=True,  # _run preflighted it
                )  # fmt: skip
        except ModelNeeded:  # nothing was written yet: the ranks run the whole audit
            return None

    def _run_distributed(self, policy: Policy) -> AuditResult:
        """Return the audit of ``policy`` run by torchrun on ``--naa-nproc`` ranks; this process joins no group."""
        from naa_guard.launcher import launch, launch_warnings

        settings = self.settings
        options = {"--device": settings.device, "--batch-size": settings.batch_size, "--limit": self.limit_for(policy), "--cache": self._chunk_root(), "--baseline": settings.baseline}
        arguments = ["audit", str(policy.source), "--quiet", "--no-reports"]
        for flag, value in options.items():
            arguments += [flag, str(value)] if value is not None else []
        outcome, _ = launch(settings.nproc, arguments, capture=True)
        if outcome.error is not None:
            raise outcome.error
        if outcome.result is None:  # never a verdict without rank 0's result (an assert would vanish under -O)
            raise DistributedError(f"the {settings.nproc}-process audit of {policy.source} ended with exit code {outcome.code} but left no result; see the ranks' output above.")
        # as the CLI warns before launching: more ranks than cores or GPUs (in the summary and the report here)
        outcome.result.warnings += launch_warnings(settings.nproc, settings.device or policy.runtime.device)
        return outcome.result

    def _chunk_root(self) -> Path | None:
        """Return the folder of the chunk store (scores saved as they finish, so a killed run resumes)."""
        if not self.settings.use_cache or self._pytest_cache is None:
            return None
        try:
            return self._pytest_cache.mkdir(CHUNK_CACHE_NAME)
        except OSError as exc:  # a read-only cache folder costs time (no resume), never an error
            self._cache_problems.append(_unusable_cache("chunk store", exc))
            return None

    def _chunk_store(self) -> ChunkStore | None:
        root = self._chunk_root()
        if root is None:
            return None
        from naa_guard.scoring.chunks import ChunkStore

        return ChunkStore(root)

    def _score_cache(self) -> ScoreCache | None:
        if not self.settings.use_cache or self._pytest_cache is None:
            return None
        from pytest_plugin.cache import DirectoryScoreCache

        try:
            return DirectoryScoreCache(self._pytest_cache.mkdir(CACHE_NAME))
        except OSError as exc:  # a read-only cache folder costs time (no cache), never an error
            self._cache_problems.append(_unusable_cache("score cache", exc))
            return None

    def _choose_report_dir(self, policy: Policy) -> Path | None:
        if self.settings.report_dir is None:
            return policy.report.dir
        # One subfolder per policy, so several policies can share one --naa-report folder.
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", policy.name).strip("-.") or "policy"
        taken = set(self._report_dirs.values())
        target, suffix = self.settings.report_dir / slug, 2
        while target in taken:
            target, suffix = self.settings.report_dir / f"{slug}-{suffix}", suffix + 1
        return target


def _unusable_cache(what: str, exc: OSError) -> str:
    return (
        f"pytest's cache folder could not hold the naa-guard {what} ({exc.strerror or exc}: {exc.filename}); this audit ran "
        f"without it, so its scores are not kept for the next run. Fix: make the cache folder writable (pytest's cache_dir), "
        f"or pass --naa-no-cache."
    )


AUDIT_SESSION = pytest.StashKey[AuditSession]()


def audit_session(config: pytest.Config) -> AuditSession:
    """Return the session's audit store (created in ``pytest_configure``)."""
    return config.stash[AUDIT_SESSION]
