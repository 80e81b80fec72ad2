"""Pydantic validation errors as sentences: what is wrong with a key, and which keys are allowed there."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Return the keys allowed at the parent of ``loc`` when it is a known section."""
    for key in loc[:-1]:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(name for name in model.model_fields if name != "source")


def describe(error: dict[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Return what is wrong at ``loc`` in words: an unknown key (with the keys allowed there), a missing one, or pydantic's message."""
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"]).removeprefix("Value error, ")
