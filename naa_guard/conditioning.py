"""Which text conditions a text-to-image model's queries get (SPEC section 3), decided once per audit.

``data.conditioning``:

- ``caption``: each image's manifest caption (the text it was trained with); a row without one is
  an error naming it;
- ``prompt``: ``data.prompt`` for every image (DreamBooth models are trained on one instance prompt);
- ``empty``: the empty caption for every image (the fallback, and a weaker attack);
- ``auto``: the prompt when ``data.prompt`` is set, else the captions when every set's manifest
  has them, else empty. Captions on some rows or sets but not others are an error: members
  queried with captions and non-members without would measure the captions, not membership.

An unconditional (pixel) model takes no text: a policy that asks for captions or a prompt for one
is an error, and its samples carry no caption.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from naa_guard.errors import DataError, PolicyError

if TYPE_CHECKING:
    from naa_guard.data import SampleSet
    from naa_guard.policy import DataSection

def _missing(sets: dict[str, SampleSet]) -> dict[str, list[str]]:
    """Return, per role, the names of the samples that have no caption."""
    return {role: [name for name, caption in zip(samples.names, samples.captions) if caption is None] for role, samples in sets.items()}


def _describe_missing(missing: dict[str, list[str]]) -> str:
    parts = []
    for role, names in missing.items():
        if names:
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            parts.append(f"{len(names)} {role} row(s) ({shown})")
    return "; ".join(parts)


def choose_conditioning(data: DataSection, sets: dict[str, SampleSet], takes_text: bool) -> str:
    """Return the conditioning used for these sets: caption, prompt, empty, or none for an unconditional model."""
    if not takes_text:
        if data.conditioning in ("caption", "prompt") or data.prompt is not None:
            raise PolicyError(
                f"data.conditioning is {data.conditioning!r}{' and data.prompt is set' if data.prompt is not None else ''}, but the "
                f"model takes no text (an unconditional pixel-space model). Remove data.prompt and use conditioning: auto."
            )
        return "none"
    if data.conditioning != "auto":
        mode = data.conditioning
    elif data.prompt is not None:
        mode = "prompt"
    else:
        missing = _missing(sets)
        captioned = sum(len(samples) - len(missing[role]) for role, samples in sets.items())
        if captioned and any(missing.values()):
            raise DataError(
                f"data.conditioning is auto and some samples have captions but {_describe_missing(missing)} have none; "
                f"querying some images with their caption and others without would measure the captions, not membership. "
                f"Add the missing captions to the manifests, or set data.conditioning: empty to use no captions at all."
            )
        mode = "caption" if captioned else "empty"
    if mode == "caption" and any((missing := _missing(sets)).values()):
        raise DataError(
            f"data.conditioning is caption but {_describe_missing(missing)} have no caption (a .csv / .jsonl manifest's "
            f"'caption' column; image folders and arrays have none). Add the captions, or set data.conditioning: empty "
            f"(weaker), or data.prompt for a model trained on one prompt."
        )
    return mode


def apply_conditioning(samples: SampleSet, mode: str, prompt: str | None) -> SampleSet:
    """Return the set with each sample's caption replaced by the text its queries get (None: no text)."""
    texts = {"none": None, "empty": "", "prompt": prompt}
    captions = samples.captions if mode == "caption" else (texts[mode],) * len(samples)
    return dataclasses.replace(samples, captions=tuple(captions))


def describe_conditioning(mode: str, prompt: str | None) -> str | None:
    """Return the conditioning as reports state it (None for an unconditional model)."""
    return {"none": None, "caption": "caption (each image's manifest caption)", "empty": "empty caption", "prompt": f"prompt {prompt!r}"}[mode]
