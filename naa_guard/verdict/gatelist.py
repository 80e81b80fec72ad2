"""The list of gates: which (result, metric) rows a policy's verdict rests on, decided from the policy alone.

Every face renders from this one list: the CLI's table and exit code, every pytest item (one per
row, collected before any model loads) and so the JUnit file and the terminal summary. A row is
one attack result and one enabled gate (``thresholds.limits()``, epsilon_lb included): each listed
attack (a tuned attack under its own name, its chosen setting gated), and with ``model.reference``
its calibrated result ``<attack>/ref`` beside it. Sweeps gate nothing.

After an audit, :func:`match_gates` pairs the audit's gates with the rows. A row with no gate, a
gate with no row or a row gated twice means some face would show a verdict the other does not:
that is an :class:`~naa_guard.errors.AuditInvalidError` (exit 2, an errored item), never a pass.

Imports nothing heavy: pytest's collection reads it without torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from naa_guard.errors import AuditInvalidError
from naa_guard.policy.resultnames import calibrated_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from naa_guard.policy import Policy
    from naa_guard.verdict.gates import GateResult

@dataclass(frozen=True)
class GatedRow:
    """One gated row: an attack result (``naa``, ``naa/ref``), one metric and its limit."""

    attack: str
    metric: str
    limit: float

    @property
    def key(self) -> tuple[str, str]:
        return self.attack, self.metric


def result_names(policy: Policy) -> list[str]:
    """Return the names of the attack results an audit of ``policy`` gates, in report order."""
    calibrated = policy.model.reference is not None
    return [name for attack in policy.attacks for name in (attack, *((calibrated_name(attack),) if calibrated else ()))]


def gated_rows(policy: Policy) -> list[GatedRow]:
    """Return every gated row of ``policy``: per attack result (raw, then calibrated), per enabled metric."""
    limits = policy.thresholds.limits()
    return [GatedRow(name, metric, limit) for name in result_names(policy) for metric, limit in limits.items()]


def gate_differences(rows: Sequence[GatedRow], gates: Sequence[GateResult]) -> list[str]:
    """Return what differs between the listed rows and an audit's gates (empty: one gate per row, no other)."""
    listed = Counter(row.key for row in rows)
    found = Counter((gate.attack, gate.metric) for gate in gates)
    problems = [f"no gate for {attack} {metric}" for (attack, metric) in listed if (attack, metric) not in found]
    problems += [f"a gate for {attack} {metric} that the policy does not list" for (attack, metric) in found if (attack, metric) not in listed]
    problems += [f"{count} gates for {attack} {metric}" for (attack, metric), count in found.items() if count > 1]
    return problems


def match_gates(policy: Policy, gates: Sequence[GateResult]) -> list[GateResult]:
    """Return the audit's gates in the order of :func:`gated_rows`; raise AuditInvalidError when they differ.

    A gate no face lists, or a listed gate the audit did not decide, would let one face pass what
    another fails: no verdict is given.
    """
    rows = gated_rows(policy)
    problems = gate_differences(rows, gates)
    if problems:
        expected = ", ".join(f"{row.attack} {row.metric}" for row in rows) or "none"
        raise AuditInvalidError(
            f"{policy.source or policy.name}: the audit's gates differ from the gates the policy lists ({'; '.join(problems)}); "
            f"expected exactly: {expected}. No verdict is given: a gate one report shows and another does not certifies nothing. "
            f"This is a bug in naa-guard or in a custom attack or loader; please report it with the policy."
        )
    by_key = {(gate.attack, gate.metric): gate for gate in gates}
    return [by_key[row.key] for row in rows]
