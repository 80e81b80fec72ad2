"""Sweeps: one attack scored under every combination of parameter values, for ablations.

``naa-guard sweep POLICY --param t=20,40,60 --param noise=schedule,scaled`` scores every
combination on the policy's whole member and non-member sets (no calibration split, no gating)
and writes a table, a CSV and a plot of the metrics against the parameters. The model is loaded
once and the sets are loaded and checked once; each combination is measured exactly as an audit
measures an attack (:meth:`naa_guard.audit.PreparedAudit.measure`), so a sweep's numbers match
an audit of the same setting.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from naa_guard.attacks import ATTACKS
from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.errors import PolicyError
from naa_guard.reports.rows import align_columns
from naa_guard.samples import reuse_file_digests
from naa_guard.scoring.encodings import forgets_temporary_encodings

if TYPE_CHECKING:
    from naa_guard.attacks.base import AttackParams
    from naa_guard.policy import Policy

COLUMNS = ("auc", "leak_auc", "tpr_at_1pct_fpr", "asr", "seconds")
COLUMN_LABELS = {"auc": "AUC", "leak_auc": "leak AUC", "tpr_at_1pct_fpr": "TPR@1%FPR", "asr": "ASR (oracle)", "seconds": "seconds"}
PLOTTED = ("leak_auc", "tpr_at_1pct_fpr", "asr")


@dataclass(frozen=True)
class SweepRow:
    """One combination's setting (the swept keys) and its leakage on the whole sets."""

    params: dict[str, Any]
    auc: float
    leak_auc: float
    leak_auc_ci: tuple[float, float]
    direction: str
    tpr_at_1pct_fpr: float
    asr: float
    queries_per_sample: int
    seconds: float
    degenerate: str | None = None  # why the scores are no evidence (naa_guard.verdict.degenerate); None for usable scores


@dataclass(frozen=True)
class SweepResult:
    """Every combination of a sweep, in grid order."""

    name: str
    attack: str
    grid: dict[str, list[Any]]
    rows: list[SweepRow]
    n_members: int
    n_nonmembers: int


def parse_params(texts: list[str]) -> dict[str, list[Any]]:
    """Return ``{name: values}`` from ``NAME=v1,v2,...`` arguments; values are read as YAML scalars."""
    grid: dict[str, list[Any]] = {}
    for text in texts:
        name, _, values = text.partition("=")
        name = name.strip()
        if not name or not values.strip():
            raise PolicyError(f"--param {text!r}: expected NAME=v1,v2,... (e.g. --param t=20,40,60).")
        if name in grid:
            raise PolicyError(f"--param {name} is given twice; list all its values in one --param {name}=v1,v2,...")
        grid[name] = [yaml.safe_load(value.strip()) for value in values.split(",")]
    if not grid:
        raise PolicyError("a sweep needs at least one --param NAME=v1,v2,...")
    return grid


def sweep_settings(policy: Policy, attack: str, grid: dict[str, list[Any]]) -> list[AttackParams]:
    """Return the validated parameters of every combination, the policy's setting as the base.

    A base that lists candidates contributes its first candidate; the swept keys override it.
    """
    if attack not in ATTACKS:
        raise PolicyError(f"--attack {attack}: unknown attack; known attacks: {', '.join(sorted(ATTACKS))}.")
    params_model = ATTACKS[attack].Params
    base = policy.attacks.get(attack)
    if isinstance(base, AttackCandidates):
        base = base.candidates[0]
    base_values = base.model_dump() if base is not None else {}
    settings, problems = [], []
    for values in itertools.product(*grid.values()):
        combination = dict(zip(grid, values))
        try:
            settings.append(params_model.model_validate({**base_values, **combination}))
        except ValidationError as exc:
            where = ", ".join(f"{key}={value}" for key, value in combination.items())
            for err in exc.errors():
                key = ".".join(map(str, err["loc"])) or attack
                message = f"unknown parameter; {attack} has: {', '.join(params_model.model_fields)}" if err["type"] == "extra_forbidden" else err["msg"]
                problems.append(f"  - {where}: {key}: {str(message).removeprefix('Value error, ')}")
    if problems:
        raise PolicyError("\n".join([f"{policy.source}: the sweep of {attack} has invalid combinations:", *dict.fromkeys(problems), "Change the --param values."]))
    return settings


@forgets_temporary_encodings  # the settings share the sets' encodings; removed when the sweep ends
@reuse_file_digests()  # the model and sample files are hashed once for every setting's keys
def sweep(policy: Policy, attack: str, grid: dict[str, list[Any]], *, device: str | None = None, batch_size: int | None = None, limit: int | None = None, progress: bool = True) -> SweepResult:
    """Return every combination's leakage for one attack, scored on the policy's whole sets."""
    from naa_guard.audit import prepare_audit

    settings = sweep_settings(policy, attack, grid)  # all validated before the model is loaded
    # Sets are loaded and checked once, the model loaded once; each combination is then measured
    # exactly as an audit measures an attack.
    prepared = prepare_audit(policy, device=device, batch_size=batch_size, limit=limit, progress=progress)
    rows = []
    for params in settings:
        measured = prepared.measure(ATTACKS[attack](params), prepared.members, prepared.nonmembers)
        leakage = measured.leakage
        rows.append(SweepRow(
            {key: getattr(params, key) for key in grid}, leakage.auc, leakage.leak_auc, leakage.metrics["auc"].ci, leakage.direction,
            leakage.metrics["tpr_at_1pct_fpr"].value, leakage.metrics["asr"].value, measured.queries_per_sample, measured.seconds,
            leakage.degenerate,
        ))  # fmt: skip
    return SweepResult(policy.name, attack, grid, rows, len(prepared.members), len(prepared.nonmembers))


def _cells(row: SweepRow) -> list[str]:
    return [*(str(value) for value in row.params.values()), *(f"{getattr(row, column):.3f}" if column != "seconds" else f"{row.seconds:.1f}" for column in COLUMNS)]


def format_sweep(result: SweepResult) -> str:
    """Return the sweep as an aligned table, one row per combination, the strongest marked."""
    header = [*result.grid, *(COLUMN_LABELS[column] for column in COLUMNS)]
    rows = [header, ["-" * len(cell) for cell in header], *(_cells(row) for row in result.rows)]
    usable = [i for i, row in enumerate(result.rows) if row.degenerate is None]
    strongest = max(usable, key=lambda i: result.rows[i].leak_auc) if usable else None
    lines = [f"sweep of {result.attack} on {result.name}: {result.n_members} members / {result.n_nonmembers} non-members (whole sets, no gating)"]
    for i, line in enumerate(align_columns(rows)):
        degenerate = 0 <= i - 2 < len(result.rows) and result.rows[i - 2].degenerate is not None
        lines.append(line + ("  <- highest leak AUC" if i - 2 == strongest else "  <- degenerate scores: no evidence" if degenerate else ""))
    lines += [f"degenerate: {row.degenerate}" for row in result.rows if row.degenerate is not None]
    reversed_rows = [row for row in result.rows if row.direction != "members_higher"]
    if reversed_rows:
        lines.append(f"{len(reversed_rows)} setting(s) reverse the signal (members score lower; AUC < 0.5): the leak AUC counts them as leaks.")
    return "\n".join(lines)


def write_sweep(result: SweepResult, directory: Path) -> list[Path]:
    """Write the sweep's CSV and plot into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"sweep-{result.attack}-{'-'.join(result.grid)}"
    csv_path = stem.with_suffix(".csv")
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*result.grid, "auc", "leak_auc", "leak_auc_ci_low", "leak_auc_ci_high", "direction", "tpr_at_1pct_fpr", "asr", "queries_per_sample", "seconds", "degenerate"])
        for row in result.rows:
            writer.writerow([*row.params.values(), row.auc, row.leak_auc, *row.leak_auc_ci, row.direction, row.tpr_at_1pct_fpr, row.asr, row.queries_per_sample, row.seconds, row.degenerate or ""])
    plot_path = stem.with_suffix(".png")
    plot_sweep(result, plot_path)
    return [csv_path, plot_path]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(result: SweepResult, path: Path) -> None:
    """Save a plot of each metric against the first swept parameter, one line per other combination."""
    import matplotlib

    matplotlib.use("Agg")  # no display in CI
    import matplotlib.pyplot as plt

    x_key, other_keys = next(iter(result.grid)), list(result.grid)[1:]
    x_values = list(dict.fromkeys(row.params[x_key] for row in result.rows))  # validated values, in order
    numeric = all(_is_number(value) for value in x_values)

    def x_of(row: SweepRow) -> Any:
        return row.params[x_key] if numeric else x_values.index(row.params[x_key])

    figure, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.6), squeeze=False)
    groups: dict[str, list[SweepRow]] = {}
    for row in result.rows:
        label = ", ".join(f"{key}={row.params[key]}" for key in other_keys) or result.attack
        groups.setdefault(label, []).append(row)
    for axis, metric in zip(axes[0], PLOTTED):
        for label, rows in groups.items():
            axis.plot([x_of(row) for row in rows], [getattr(row, metric) for row in rows], marker="o", label=label)
        axis.set_xlabel(x_key)
        axis.set_ylabel(COLUMN_LABELS[metric])
        axis.grid(alpha=0.3)
        if not numeric:
            axis.set_xticks(range(len(x_values)), [str(value) for value in x_values])
    axes[0][0].legend(fontsize="small")
    figure.suptitle(f"{result.attack} on {result.name} ({result.n_members} members / {result.n_nonmembers} non-members)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
