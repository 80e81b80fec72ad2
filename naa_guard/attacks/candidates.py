"""Candidate settings: an attack block that lists values for its parameters, e.g.
``naa: {t: [20, 40], noise: [schedule, scaled]}``, stands for every combination (the cartesian
product). Policy validation expands the lists here; :mod:`naa_guard.tuning` picks the strongest on
a calibration split. Imports neither torch, numpy nor scikit-learn (pytest collection stays light).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from naa_guard.attacks.base import AttackParams


# Every candidate is scored on the calibration part: a cap keeps a typo from costing hours.
MAX_CANDIDATES = 64


@dataclass(frozen=True)
class AttackCandidates:
    """An attack block that lists candidate settings: every combination of the listed values."""

    grid: dict[str, tuple[Any, ...]]  # the listed keys and their candidate values, in policy order
    candidates: tuple[AttackParams, ...]

    def varied(self, params: AttackParams) -> dict[str, Any]:
        """Return the listed keys' values in one candidate."""
        return {key: getattr(params, key) for key in self.grid}


class CandidateListError(ValueError):
    """Raised when an attack block's candidate lists cannot be expanded; carries (key, message, found)."""

    def __init__(self, errors: list[tuple[str, str, Any]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message, _ in errors))
        self.errors = errors


def candidate_settings(raw: Any, list_valued: frozenset[str] = frozenset()) -> tuple[list[Any], dict[str, tuple[Any, ...]]]:
    """Return every combination of an attack block's listed values, and the listed keys' values.

    A block without lists (or whose lists hold one value each) is one setting and an empty grid.
    A key in ``list_valued`` takes a list as its value, so only a list of lists lists its candidates.
    Anything but a mapping is returned as is, for the parameter model to reject.
    """
    if not isinstance(raw, dict):
        return [raw], {}
    grid = {key: tuple(value) for key, value in raw.items() if _lists_candidates(key, value, list_valued)}
    errors = []
    for key, values in grid.items():
        if not values:
            errors.append((key, "an empty list of candidates; give at least one value", []))
        elif len({repr(value) for value in values}) < len(values):
            errors.append((key, "the candidate list repeats a value; list each value once", list(values)))
    count = math.prod(len(values) for values in grid.values())
    if count > MAX_CANDIDATES:
        sizes = " x ".join(f"{len(values)} {key}" for key, values in grid.items())
        errors.append((next(iter(grid)), f"{sizes} make {count} candidates; at most {MAX_CANDIDATES} are allowed. Shorten the lists", count))
    if errors:
        raise CandidateListError(errors)
    combinations = [{**raw, **dict(zip(grid, values))} for values in itertools.product(*grid.values())]
    return combinations, (grid if count > 1 else {})


def _lists_candidates(key: str, value: Any, list_valued: frozenset[str]) -> bool:
    if key in list_valued:
        return isinstance(value, list) and bool(value) and all(isinstance(item, list) for item in value)
    return isinstance(value, list)


def describe_candidate(setting: dict[str, Any], grid: dict[str, tuple[Any, ...]]) -> str:
    """Return ``t=20, noise=scaled``: a candidate's listed values, for messages."""
    return ", ".join(f"{key}={setting[key]}" for key in grid)


def listable_schema(params_schema: dict[str, Any]) -> dict[str, Any]:
    """Return an attack's JSON schema with every parameter also accepting a list of candidates."""
    schema = dict(params_schema)
    schema["properties"] = {
        name: {"anyOf": [prop, {"type": "array", "items": prop, "minItems": 1, "description": "candidate values (tuned)"}]}
        for name, prop in params_schema.get("properties", {}).items()
    }
    return schema
