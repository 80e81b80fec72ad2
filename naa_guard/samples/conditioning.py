"""Which text conditions a text-to-image model's queries get (SPEC section 3), decided once per audit.

``data.conditioning``:

- ``caption``: each image's caption (the text it was trained with: a manifest's caption column,
  an imagefolder's ``metadata.jsonl`` / ``metadata.csv``, or ``.txt`` / ``.caption`` sidecars, see
  :mod:`naa_guard.samples.captions`); an image without one is an error naming it;
- ``prompt``: ``data.prompt`` for every image (DreamBooth models are trained on one instance prompt);
- ``empty``: the empty caption for every image, only when asked for: a much weaker attack (loss
  AUC 0.91 with the true captions, 0.54 empty on a fine-tune), so the reports say so;
- ``auto``: the prompt when ``data.prompt`` is set, else the captions when every image has one.
  No caption anywhere is an error naming where captions could come from (never a silent
  fallback to empty), and so are captions on some images but not others: members queried with
  captions and non-members without would measure the captions, not membership.

An unconditional (pixel) model takes no text: a policy that asks for captions or a prompt for one
is an error, and its samples carry no caption.

A blank text (:func:`naa_guard.blanktext.is_blank`) is a missing one, in every source and in
``data.prompt``. The check then goes deeper than the string (:func:`check_encoder_conditioning`):
a caption or prompt that the model's text encoder receives as the empty caption (see
:mod:`naa_guard.targets.emptytext`) carries nothing either. ``caption`` / ``prompt`` then refuse;
``auto`` refuses a mix (some images or sides conditioned, others not) and, when every text of
every side reaches the encoder as the empty caption, runs and reports the weak, caption-free audit
(mode ``encoder-empty``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from naa_guard.errors import DataError, PolicyError

if TYPE_CHECKING:
    from naa_guard.samples.sampleset import SampleSet

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


CAPTION_SOURCES = (
    "a manifest's caption column ('caption' or 'text', or data.caption_column), an image folder's metadata.jsonl / "
    "metadata.csv (file_name + caption column), or .txt / .caption sidecar files beside the images"
)
EMPTY_WARNING = (
    "text conditioning is the empty caption (data.conditioning: empty): this is the weak, caption-free audit; a model "
    "that leaks its members under their training captions can pass it (measured: loss AUC 0.91 with captions, 0.54 empty)"
)


def choose_conditioning(requested: str, prompt: str | None, sets: dict[str, SampleSet], takes_text: bool) -> str:
    """Return the conditioning used for these sets: caption, prompt, empty, or none for an unconditional model.

    ``requested`` and ``prompt`` are the policy's ``data.conditioning`` and ``data.prompt``.
    """
    if not takes_text:
        if requested in ("caption", "prompt") or prompt is not None:
            raise PolicyError(
                f"data.conditioning is {requested!r}{' and data.prompt is set' if prompt is not None else ''}, but the "
                f"model takes no text (an unconditional pixel-space model). Remove data.prompt and use conditioning: auto."
            )
        return "none"
    if requested != "auto":
        mode = requested
    elif prompt is not None:
        mode = "prompt"
    else:
        missing = _missing(sets)
        captioned = sum(len(samples) - len(missing[role]) for role, samples in sets.items())
        if captioned and any(missing.values()):
            raise DataError(
                f"data.conditioning is auto and some samples have captions but {_describe_missing(missing)} have none; "
                f"querying some images with their caption and others without would measure the captions, not membership. "
                f"Add the missing captions (a blank caption is a missing one), or set data.conditioning: empty to use no captions "
                f"at all (the weak, caption-free audit)."
            )
        if not captioned:
            raise PolicyError(
                "data.conditioning is auto, the model is text-conditioned, and no member or non-member has a caption and "
                f"data.prompt is not set; auditing with the empty caption would be the weak audit, chosen silently. Captions "
                f"come from {CAPTION_SOURCES}. Fix in the policy file: add the captions the model was trained with, set "
                "data.prompt for a model trained on one prompt (DreamBooth), or set data.conditioning: empty to audit "
                "caption-free on purpose (the report then says it is the weak audit)."
            )
        mode = "caption"
    if mode == "caption" and any((missing := _missing(sets)).values()):
        raise DataError(
            f"data.conditioning is caption but {_describe_missing(missing)} have no caption (a blank caption is a missing one; "
            f"captions come from {CAPTION_SOURCES}; array files have none). Add the captions, or set data.conditioning: empty "
            f"(the weak, caption-free audit), or data.prompt for a model trained on one prompt."
        )
    return mode


ENCODER_EMPTY = "encoder-empty"  # auto, and the text encoder receives every text as the empty caption
ENCODER_EMPTY_WARNING = (
    "text conditioning is the empty caption: data.conditioning is auto, but the model's text encoder receives every caption / "
    "the prompt as the empty caption (same tokens), so this is the weak, caption-free audit; a model that leaks its members "
    "under their training captions can pass it (measured: loss AUC 0.91 with captions, 0.54 empty)"
)


def check_encoder_conditioning(requested: str, mode: str, prompt: str | None, sets: dict[str, SampleSet], empty_texts: Callable[[Sequence[str]], list[bool]] | None) -> str:
    """Return the mode once the text encoder has been asked which texts it receives as the empty caption.

    ``empty_texts`` (:func:`naa_guard.targets.emptytext.empty_text_probe`; None: the model cannot
    be asked) takes distinct texts. Returns ``mode``, or ``encoder-empty`` under ``auto`` when
    every text of every side is empty to the encoder; raises when ``caption`` / ``prompt`` was
    asked for and a text is empty to it, or under ``auto`` when only some images or sides are.
    """
    if empty_texts is None or mode not in ("caption", "prompt"):
        return mode
    if mode == "prompt":
        if not empty_texts([str(prompt)])[0]:
            return mode
        if requested == "prompt":
            raise PolicyError(
                f"data.prompt is {prompt!r}, but the model's text encoder receives it as the empty caption (its tokens are the empty "
                "caption's: the tokenizer drops or folds its characters, or reads special tokens such as <|endoftext|>), so "
                "conditioning: prompt would run the weak, caption-free audit under the name 'prompt'. Fix in the policy file: set "
                "data.prompt to the prompt the model was trained with, or conditioning: empty to audit caption-free on purpose."
            )
        return ENCODER_EMPTY
    texts = list(dict.fromkeys(caption for samples in sets.values() for caption in samples.captions if caption is not None))
    empty = dict(zip(texts, empty_texts(texts), strict=True))
    found = {role: [name for name, caption in zip(samples.names, samples.captions) if caption is not None and empty[caption]] for role, samples in sets.items()}
    if not any(found.values()):
        return mode
    if requested == "auto" and all(len(found[role]) == len(samples) for role, samples in sets.items()):
        return ENCODER_EMPTY
    example = next(caption for samples in sets.values() for caption in samples.captions if caption is not None and empty[caption])
    raise DataError(
        f"data.conditioning is {requested}, but the model's text encoder receives the captions of {_describe_missing(found)} as "
        f"the empty caption (e.g. {example!r}: its tokens are the empty caption's; the tokenizer drops or folds its characters, "
        "or reads special tokens such as <|endoftext|>). Those images would be queried with no text while others are not, or "
        "while the report says 'caption'. Fix: give every image the caption it was trained with, or set data.conditioning: empty "
        "to audit caption-free on purpose (the weak audit)."
    )


def apply_conditioning(samples: SampleSet, mode: str, prompt: str | None) -> SampleSet:
    """Return the set with each sample's caption replaced by the text its queries get (None: no text)."""
    texts = {"none": None, "empty": "", ENCODER_EMPTY: "", "prompt": prompt}
    captions = samples.captions if mode == "caption" else (texts[mode],) * len(samples)
    return dataclasses.replace(samples, captions=tuple(captions))


def describe_conditioning(mode: str, prompt: str | None) -> str | None:
    """Return the conditioning as reports state it (None for an unconditional model)."""
    return {
        "none": None, "caption": "caption (each image's own caption)", "empty": "empty caption (data.conditioning: empty; the weak, caption-free audit)",
        ENCODER_EMPTY: "empty caption (data.conditioning: auto, but the text encoder receives every caption / the prompt as the empty caption; the weak, caption-free audit)",
        "prompt": f"prompt {prompt!r}",
    }[mode]  # fmt: skip


def conditioning_warnings(mode: str) -> list[str]:
    """Return the report warnings the conditioning calls for: the caption-free audit is the weak one."""
    return {"empty": [EMPTY_WARNING], ENCODER_EMPTY: [ENCODER_EMPTY_WARNING]}.get(mode, [])
