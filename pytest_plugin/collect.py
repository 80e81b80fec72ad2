"""Collection: a policy file is a test file, each gated row one test item.

``demo.naa.yaml`` -> ``demo.naa.yaml::naa`` (one collector per attack result) -> ``demo.naa.yaml::naa::auc``,
``...::naa::tpr@1%fpr`` and ``...::naa::tpr@0.1%fpr`` (one item per enabled gate), so ``-k``,
JUnit XML and CI annotations name the gate. The rows are the library's
(:func:`naa_guard.verdict.gatelist.gated_rows`), the ones the CLI's table and exit code render:
with ``model.reference`` each attack's calibrated result is a collector of its own
(``demo.naa.yaml::naa/ref::auc``). An audit whose gates differ from these rows errors every item.
Collecting validates the policy but never loads the model: the audit runs in the setup of the
policy's first item. A gate that the sets' counts cannot
resolve (counted from their listings: no image decoded) is a collection error of its own item,
``demo.naa.yaml::naa::auc``, with the count needed and present (:mod:`naa_guard.verdict.resolvable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from naa_guard.errors import AuditInvalidError, EnvironmentUnavailableError, NaaGuardError, PolicyError
from naa_guard.policy import Policy
from naa_guard.policy.preflight import model_free_problems
from naa_guard.reports.rows import confidence_of
from naa_guard.verdict.gatelist import GatedRow, gated_rows, match_gates
from naa_guard.verdict.resolvable import unresolvable_before_loading
from naa_guard.version import __version__
from pytest_plugin.session import audit_session, quick_note

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from naa_guard.result import AuditResult
    from naa_guard.verdict.gates import GateResult

GATE_IDS = {"auc": "auc", "tpr_at_1pct_fpr": "tpr@1%fpr", "tpr_at_0_1pct_fpr": "tpr@0.1%fpr", "epsilon_lb": "epsilon_lb"}
DEFAULT_PATTERNS = ("*.naa.yaml", "*.naa.yml")
EXTRA_POLICIES = pytest.StashKey[set[Path]]()


def is_policy_file(file_path: Path, config: pytest.Config) -> bool:
    """Return True when pytest should collect ``file_path`` as a policy."""
    patterns = config.getini("naa_policy_patterns") or DEFAULT_PATTERNS
    if any(fnmatch(file_path.name, pattern) for pattern in patterns):
        return True
    extra = config.stash[EXTRA_POLICIES]
    return bool(extra) and file_path.resolve() in extra


class PolicyFile(pytest.File):
    """A policy file; its children are one collector per listed attack."""

    def collect(self) -> Iterator[AttackGates]:
        """Yield one collector per attack of the validated policy (a PolicyError stops here)."""
        session = audit_session(self.config)
        policy = session.policy(self.path)
        unresolvable = unresolvable_before_loading(policy, session.limit_for(policy) or policy.data.limit)
        if unresolvable:  # these collection errors stop the run: they name the other model-free problems too, as the CLI lists them all
            others = model_free_problems(policy)
            also = "".join(f"\nalso found before any model loads: {type(problem).__name__}: {problem}" for problem in others)
            unresolvable = {metric: message + also for metric, message in unresolvable.items()}
        by_result: dict[str, list[GatedRow]] = {}
        for row in gated_rows(policy):
            by_result.setdefault(row.attack, []).append(row)
        for name, rows in by_result.items():
            yield AttackGates.from_parent(self, name=name, policy=policy, rows=rows, unresolvable=unresolvable)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:  # type: ignore[override]
        """Return the policy's own validation message: the plugin's traceback would only hide it."""
        if isinstance(excinfo.value, NaaGuardError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)


class AttackGates(pytest.Collector):
    """One attack result of a policy (``naa``, or ``naa/ref`` with a reference); its children are its gated rows."""

    def __init__(self, *, policy: Policy, rows: list[GatedRow], unresolvable: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.rows = rows
        self.unresolvable = unresolvable

    def collect(self) -> Iterator[GateItem | UnresolvableGate]:
        """Yield one item per gated row; an unresolvable gate errors as it is collected."""
        for row in self.rows:
            if row.metric in self.unresolvable:
                yield UnresolvableGate.from_parent(self, name=GATE_IDS[row.metric], message=f"{self.policy.source}: {self.unresolvable[row.metric]}")
            else:
                yield GateItem.from_parent(self, name=GATE_IDS[row.metric], policy=self.policy, row=row)


class UnresolvableGate(pytest.Collector):
    """A gate the counts cannot resolve: collecting it is the error, before any model or image loads."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def collect(self) -> Iterator[pytest.Item]:
        """Raise the policy error that names the gate, the count needed, the count present and the fixes."""
        raise PolicyError(self.message)

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:  # type: ignore[override]
        """Return the message alone: a traceback of the plugin would only hide it."""
        return f"{type(excinfo.value).__name__}: {excinfo.value}"


class GateItem(pytest.Item):
    """One privacy gate: an attack's metric must not exceed the policy's limit."""

    def __init__(self, *, policy: Policy, row: GatedRow, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.attack = row.attack
        self.metric = row.metric
        self.limit = row.limit
        self.gate: GateResult | None = None

    @property
    def policy_id(self) -> str:
        """Return the policy file's node id (its path relative to the rootdir)."""
        return self.parent.parent.nodeid

    def setup(self) -> None:
        """Run (or reuse) the policy's audit, so a broken audit reports as an error, not a failure."""
        session = audit_session(self.config)
        # Set before the audit, so errored and skipped gates still name themselves in JUnit XML.
        self.user_properties += [("naa_guard", __version__), ("policy", self.policy_id), ("attack", self.attack), ("metric", self.metric), ("limit", self.limit)]
        result = session.outcome(self.policy)
        if isinstance(result, EnvironmentUnavailableError):
            if session.settings.strict:
                reason = session.settings.strict_reason
                pytest.fail(f"{type(result).__name__}: {result}\n({reason}: a missing environment is an error, not a skip)", pytrace=False)
            skip = pytest.skip.Exception(f"naa-guard: {result}")
            skip._use_item_location = True  # report the skip at the policy file, not inside the plugin
            raise skip
        if isinstance(result, NaaGuardError):
            pytest.fail(f"{type(result).__name__}: {result}", pytrace=False)
        try:  # the session matched them already; checked again here, so that no item passes on a gate it did not find
            gates = match_gates(self.policy, result.gates)
        except AuditInvalidError as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)
        self.gate = next(g for g in gates if (g.attack, g.metric) == (self.attack, self.metric))
        self.user_properties += _measured_properties(result, self.gate, session.limit_for(self.policy), session.report_dir(self.policy))
        if self.gate.status == "error":
            pytest.fail(self._explain(self.gate.message), pytrace=False)

    def runtest(self) -> None:
        """Fail with the gate's sentence when its metric exceeds the limit."""
        assert self.gate is not None, "setup() sets the gate"
        if self.gate.status == "fail":
            pytest.fail(self._explain(self.gate.message), pytrace=False)

    def _explain(self, message: str) -> str:
        session = audit_session(self.config)
        quick = session.limit_for(self.policy)  # None unless --naa-quick subsampled this audit
        headline, *details = message.split("\n")
        lines = [headline + (f" {quick_note(quick)}" if quick is not None else ""), *details]
        lines.append(f"policy: {self.policy.source} (thresholds.{self.metric}: {self.limit})")
        report = session.report_dir(self.policy)
        if report is not None:
            lines.append(f"report: {report / 'report.md'} (ROC plot: {report / 'roc.png'}; open {report / 'report.html'} to review it all)")
        else:
            lines.append("ROC plot and score histograms: re-run with --naa-report DIR")
        return "\n".join(lines)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Return where the gate is declared (the policy file) and the headline of its failure."""
        # Tagged like pytest's "[doctest] ...": a domain that ends the node id would have its dots
        # (tpr@0.1%fpr, .naa.yaml) rewritten to "::" in verbose output.
        return self.path, 0, f"[naa-guard] {self.nodeid}"


def _measured_properties(result: AuditResult, gate: GateResult, quick: int | None, report: Path | None) -> list[tuple[str, object]]:
    """Return the gate's measurements as user properties (they land in JUnit XML)."""
    properties: list[tuple[str, object]] = [
        ("value", round(gate.value, 6)), ("ci_low", round(gate.ci[0], 6)), ("ci_high", round(gate.ci[1], 6)),
        ("direction", gate.direction), ("decision", gate.decision), ("confidence", confidence_of(result)), ("status", gate.status),
        ("n_members", result.n_members), ("n_nonmembers", result.n_nonmembers),
        ("scores", "cached" if all(attack.cached for attack in result.attacks.values()) else "computed"),
        ("model_loaded", result.model_loaded),
    ]  # fmt: skip
    # the estimate itself within the limit, and no regression: a failed gate then is NOT CERTIFIED, not a leak (the CLI's words)
    properties.append(("within_limit", bool(gate.value <= gate.limit) and not (gate.baseline or {}).get("regressed")))
    if quick is not None:
        properties.append(("quick", quick))
    if report is not None:
        properties.append(("report", str(report)))
    return properties
