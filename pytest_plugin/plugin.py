"""pytest entry point of naa-guard (registered through the ``pytest11`` entry point).

Hooks, options and fixtures only; the work lives beside it: ``collect`` (policy files and gate
items), ``session`` (one audit per policy per session), ``cache`` (scores across runs),
``summary`` (terminal table and CI step summary), ``scheduling`` (pytest-xdist). Nothing imported
here imports torch or diffusers: the audit engine loads when the first gate item runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_plugin.collect import DEFAULT_PATTERNS, EXTRA_POLICIES, PolicyFile, is_policy_file
from pytest_plugin.session import AUDIT_SESSION, AuditSession, Settings, audit_session, quick_note
from pytest_plugin.summary import GATE_SUMMARY, GateSummary

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.result import AuditResult


def _positive_int(text: str) -> int:
    """Return ``text`` as an int >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _device(text: str) -> str:
    """Return ``text`` if it is a device a policy may name (argparse type)."""
    from pydantic import ValidationError

    from naa_guard.policy import Runtime

    try:
        return Runtime(device=text).device
    except ValidationError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; allowed: auto, cpu, cuda, cuda:N, mps") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the naa-guard options (group "naa-guard", prefix ``--naa-``) and ini keys."""
    group = parser.getgroup("naa-guard", "naa-guard: membership-inference privacy gates")
    group.addoption("--naa-policy", action="append", default=[], metavar="PATH", help="also collect this policy file, or every policy file (naa_policy_patterns) under this folder (repeatable)")
    group.addoption("--naa-device", type=_device, metavar="DEVICE", help="override runtime.device of every policy: auto, cpu, cuda, cuda:N, mps")
    group.addoption("--naa-batch-size", type=_positive_int, metavar="N", help="override runtime.batch_size of every policy")
    group.addoption("--naa-quick", type=_positive_int, metavar="N", help="score a seeded subsample of N members and N non-members: a fast local check, not a release verdict")
    group.addoption("--naa-report", metavar="DIR", help="write report.json, report.md, roc.png and scores_<attack>.png per policy under DIR/<policy name>/")
    group.addoption("--naa-no-cache", action="store_true", help="recompute every score: neither read nor write the score cache")
    group.addoption("--naa-nproc", type=_positive_int, metavar="N", help="score each policy on N processes: a torchrun subprocess (one rank per GPU, else CPU processes)")
    group.addoption("--naa-strict", action="store_true", help="a missing environment (e.g. no CUDA) is an error instead of a skip (the default where $CI is set)")
    group.addoption("--naa-no-strict", action="store_true", help="a missing environment is a skip even where $CI is set (the gate is reported NOT VERIFIED)")
    group.addoption("--naa-mlflow", action="store_true", help="log each policy's params, gated metrics, verdict and reports into MLflow: a nested run under the active run, or a new run under MLFLOW_TRACKING_URI")
    group.addoption("--naa-baseline", metavar="PATH", help="a previous report.json to compare every policy with (overrides the policy's baseline; gate: thresholds.max_increase)")
    parser.addini("naa_policy_patterns", "file name patterns of policy files", type="args", default=list(DEFAULT_PATTERNS))
    parser.addini("naa_report_dir", "like --naa-report, relative to the ini file", default="")
    parser.addini("naa_strict", "like --naa-strict (true) or --naa-no-strict (false); unset: strict where $CI is set", type="bool", default=None)
    parser.addini("naa_device", "like --naa-device", default="")


def pytest_configure(config: pytest.Config) -> None:
    """Create the session's audit store and summary; queue ``--naa-policy`` files for collection."""
    config.stash[AUDIT_SESSION] = AuditSession(Settings.from_config(config), getattr(config, "cache", None))
    # Registered as a plugin: it hears every report, the workers' too under xdist.
    config.stash[GATE_SUMMARY] = GateSummary()
    config.pluginmanager.register(config.stash[GATE_SUMMARY], "naa_guard_summary")
    patterns = config.getini("naa_policy_patterns") or DEFAULT_PATTERNS
    extra = [file.resolve() for path in config.getoption("naa_policy") for file in policy_files(config.invocation_params.dir / path, path, patterns)]
    config.stash[EXTRA_POLICIES] = set(extra)
    config.args += [str(path) for path in extra if str(path) not in config.args]


def policy_files(path: Path, given: str, patterns: list[str] | tuple[str, ...]) -> list[Path]:
    """Return the policy files ``--naa-policy`` names: the file itself, or those matching ``patterns`` under a folder.

    A folder with no matching file, or a path that does not exist, is a usage error that says why.
    """
    if path.is_dir():
        found = sorted({file for pattern in patterns for file in path.rglob(pattern) if file.is_file()})
        if not found:
            yamls = sorted(p.name for p in path.rglob("*.y*ml"))[:5]
            seen = f" (YAML files found: {', '.join(yamls)})" if yamls else ""
            raise pytest.UsageError(
                f"--naa-policy {given}: the folder {path} holds no policy file matching {', '.join(patterns)}{seen}. "
                f"Name policy files *.naa.yaml, set naa_policy_patterns in the ini file, or pass the files themselves."
            )
        return found
    if not path.exists():
        raise pytest.UsageError(f"--naa-policy {given}: no such file or folder ({path}).")
    return [path]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> PolicyFile | None:
    """Collect policy files (``naa_policy_patterns`` or ``--naa-policy``) as test files."""
    if is_policy_file(file_path, parent.config):
        return PolicyFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Any:
    """Attach the audit's warnings to each gate item as ``warning`` properties (JUnit XML), whatever its outcome."""
    yield
    policy = getattr(item, "policy", None)
    if "naa_guard" in dict(item.user_properties) and policy is not None:
        item.user_properties += [("warning", text) for text in audit_session(item.config).warnings(policy)]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say when the run is a quick check, so nobody mistakes it for a release verdict."""
    quick = audit_session(config).settings.quick
    return [f"naa-guard: --naa-quick {quick} {quick_note(quick)}"] if quick else []


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the gate table (policy, attack, gate, value, CI, limit, verdict) and the audits' warnings."""
    config.stash[GATE_SUMMARY].write_terminal(terminalreporter)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Append the gate table to ``$GITHUB_STEP_SUMMARY`` (on the controller only under xdist)."""
    if not hasattr(session.config, "workerinput"):
        session.config.stash[GATE_SUMMARY].append_step_summary()


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Keep each policy's gate items on one xdist worker (they share one audit)."""
    from pytest_plugin.scheduling import make_scheduler

    return make_scheduler(config, log)


@pytest.fixture(scope="session")
def naa_policy(pytestconfig: pytest.Config) -> Callable[[str | Path], Policy]:
    """Return a function that loads and validates a policy file (paths relative to the rootdir)."""
    session = audit_session(pytestconfig)
    return lambda path: session.policy(pytestconfig.rootpath / path)


@pytest.fixture(scope="session")
def naa_audit(pytestconfig: pytest.Config) -> Callable[[str | Path], AuditResult]:
    """Return a function that gives a policy's session-cached ``AuditResult`` (shared with its items)."""
    session = audit_session(pytestconfig)
    return lambda path: session.result(session.policy(pytestconfig.rootpath / path))
