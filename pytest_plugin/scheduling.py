"""pytest-xdist scheduling that keeps each policy file on one worker.

A policy's gate items share one audit; split across workers, each worker would load the model
and score every sample again. Under ``--dist load`` (the default of ``-n``) and ``--dist loadscope``
the plugin swaps in this scheduler: a policy file is one work unit, every other test is scheduled
as xdist would (alone under ``load``, by module or class under ``loadscope``). It is the
``loadgroup`` scheduler with each policy file an implicit group, so node ids stay unchanged.
``loadfile`` keeps policies together by itself; under ``worksteal`` or ``loadgroup`` a policy may
be split, which costs a duplicate audit but not correctness (the score cache is safe for
concurrent writers). This module imports xdist and is only imported from xdist's hook.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

POLICY_SUFFIXES = (".yaml", ".yml")
SCHEDULED_MODES = ("load", "loadscope")


class PolicyScheduling(LoadScopeScheduling):
    """Schedules each policy file as one unit and every other test as its ``--dist`` mode would."""

    def __init__(self, config: pytest.Config, log: Any = None, *, by_scope: bool = False) -> None:
        super().__init__(config, log)
        self.by_scope = by_scope

    def _split_scope(self, nodeid: str) -> str:
        """Return the work unit of a test: its policy file, or what its ``--dist`` mode gives."""
        path = nodeid.split("::", 1)[0]
        if path.endswith(POLICY_SUFFIXES):
            return path
        return super()._split_scope(nodeid) if self.by_scope else nodeid


def make_scheduler(config: pytest.Config, log: Any) -> PolicyScheduling | None:
    """Return the policy-aware scheduler for ``load`` and ``loadscope``; None leaves xdist's choice."""
    mode = config.getvalue("dist")
    if mode not in SCHEDULED_MODES:
        return None
    return PolicyScheduling(config, log, by_scope=mode == "loadscope")
