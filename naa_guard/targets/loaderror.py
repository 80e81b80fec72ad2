"""A model-loading failure told in a few lines: what went wrong first, then a capped list of examples.

torch's ``load_state_dict`` error lists one line per tensor whose shape differs from the config's
("size mismatch for conv_in.weight: copying a param with shape ..."); a UNet with another
``block_out_channels`` gives hundreds. :func:`load_error_detail` counts them and names a few, so
the message, the fix and the first examples come before any list.
"""

from __future__ import annotations

import re

__all__ = ["load_error_detail"]

SHOWN = 3  # size mismatches named; the others are counted
MAX_CHARS = 1200  # any other error text beyond this is cut
_MISMATCH = re.compile(
    r"size mismatch for (?P<name>[^:]+): copying a param with shape (?:torch\.Size\()?(?P<stored>\[[^\]]*\])\)? from checkpoint, "
    r"the shape in current model is (?:torch\.Size\()?(?P<model>\[[^\]]*\])\)?"
)


def load_error_detail(exc: BaseException) -> str:
    """Return the error's text on one line: size mismatches counted, the first few named; other lines as they are, capped.

    diffusers' hint to pass ``ignore_mismatched_sizes=True`` is dropped: it would load a broken model.
    """
    text = str(exc)
    mismatches = list(_MISMATCH.finditer(text))
    lines = [line.strip() for line in text.splitlines() if line.strip() and "ignore_mismatched_sizes" not in line and not _MISMATCH.search(line)]
    if mismatches:
        head = " ".join(line for line in lines if not line.lower().startswith("size mismatch")) or "Error(s) in loading state_dict:"
        shown = "; ".join(f"size mismatch for {m['name'].strip()}: {m['stored']} in the weights vs {m['model']} in the config" for m in mismatches[:SHOWN])
        more = f"; and {len(mismatches) - SHOWN} more" if len(mismatches) > SHOWN else ""
        summary = f"{len(mismatches)} tensor(s) of the weights have another shape than the config gives them (the config does not describe these weights), e.g. {shown}{more}."
        return _cap(f"{head.rstrip(':')}: {summary}")
    return _cap(" ".join(lines))


def _cap(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"
