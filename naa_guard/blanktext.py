"""When a text carries nothing: one rule for captions from every source, ``data.prompt`` and ``${ENV}`` values.

A text is blank when nothing of it is left once Unicode whitespace (``str.isspace``: spaces, tabs,
line breaks, no-break and ideographic spaces, ...), format characters (category Cf: zero-width
space U+200B, joiners, word joiner U+2060, byte-order mark U+FEFF, soft hyphen, direction marks,
tag characters) and control characters (category Cc) are removed. None of them shows a reader
anything, and a text encoder queried with only them is queried with (nearly) the empty caption,
so a blank caption or prompt is a missing one: the audit never calls it "caption" or "prompt".

A text that is not blank can still reach the text encoder as the empty caption (a tokenizer that
drops or folds characters, a literal ``<|endoftext|>``): that deeper check is
:mod:`naa_guard.targets.emptytext`.
"""

from __future__ import annotations

import unicodedata

__all__ = ["describe_blank", "is_blank"]

_INVISIBLE_CATEGORIES = ("Cf", "Cc")


def _invisible(character: str) -> bool:
    return character.isspace() or unicodedata.category(character) in _INVISIBLE_CATEGORIES


def is_blank(text: str | None) -> bool:
    """Return True when ``text`` is None or holds only whitespace, format (Cf) and control (Cc) characters."""
    return text is None or all(_invisible(character) for character in text)


def describe_blank(text: str) -> str:
    """Return how a blank text reads in a message: empty, or the code points it holds (at most 5 named)."""
    if not text:
        return "empty"
    points = list(dict.fromkeys(f"U+{ord(c):04X}" for c in text))
    shown = ", ".join(points[:5]) + (" ..." if len(points) > 5 else "")
    return f"blank (only whitespace / invisible characters: {shown})"
