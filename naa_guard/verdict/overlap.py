"""The overlap check: the same image (identical pixels after preprocessing) on both sides makes the
member / non-member comparison meaningless; so does a control image that is also a member or a
non-member (SPEC section 5). A failure raises :class:`AuditInvalidError` naming the duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import AuditInvalidError
from naa_guard.samples import SampleSet
from naa_guard.samples.summary import SetSummary, summary

if TYPE_CHECKING:
    pass


EXAMPLES = 5  # duplicate pairs named in an overlap message


@dataclass(frozen=True)
class OverlapCheck:
    """Identical images found between two sample sets."""

    first: str  # role names, e.g. "members"
    second: str
    pairs: tuple[tuple[str, str], ...]  # (name in first, name in second) for every duplicate

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: the count and a few example pairs."""
        return {"sets": [self.first, self.second], "count": len(self.pairs), "examples": [list(p) for p in self.pairs[:EXAMPLES]]}


def find_overlap(first: SampleSet | SetSummary, second: SampleSet | SetSummary, first_role: str, second_role: str) -> OverlapCheck:
    """Return every pair of identical preprocessed images between two sets."""
    first, second = summary(first), summary(second)
    seen: dict[str, str] = {}
    for name, digest in zip(first.names, first.digests):
        seen.setdefault(digest, name)
    pairs = tuple((seen[d], name) for name, d in zip(second.names, second.digests) if d in seen)
    return OverlapCheck(first_role, second_role, pairs)


def check_overlap(
    first: SampleSet | SetSummary, second: SampleSet | SetSummary, first_role: str, second_role: str, *, explain: Callable[[OverlapCheck], str] | None = None
) -> OverlapCheck:
    """Return the overlap check of two sets; raise AuditInvalidError when they share an image.

    ``explain`` adds to the message what preprocessing did to the duplicates (e.g. dropped alpha).
    """
    found = find_overlap(first, second, first_role, second_role)
    if found.pairs:
        examples = ", ".join(f"{a} = {b}" for a, b in found.pairs[:EXAMPLES])
        more = f" and {len(found.pairs) - EXAMPLES} more" if len(found.pairs) > EXAMPLES else ""
        raise AuditInvalidError(
            f"{len(found.pairs)} image(s) appear in both the {first_role} ({first.source}) and the "
            f"{second_role} ({second.source}) with identical pixels after preprocessing, e.g. "
            f"{examples}{more}. An image cannot be both seen and unseen by the model, so the "
            f"comparison would be meaningless. Fix: remove the duplicates from one side (usually "
            f"the {second_role}) and deduplicate the split before auditing.{explain(found) if explain else ''}"
        )
    return found


_ROLE_KEYS = {"members": "members", "non-members": "nonmembers", "control set": "control"}


def _sample_has_alpha(samples: SampleSet, position: int) -> bool:
    """Return whether preprocessing dropped (or will drop) the sample's alpha channel."""
    origin = samples.origin(position)
    noted = samples.log.alpha if samples.log is not None else {}
    if origin in noted or Path(origin).name in noted:  # image files are noted by path, array rows by file name[row]
        return True
    try:  # the notes of images decoded in another process (a distributed run) are not here: read the header
        from PIL import Image

        with Image.open(origin) as img:
            return "A" in img.mode or (img.mode == "P" and "transparency" in img.info)
    except (OSError, ValueError):
        return False


def alpha_explanation(sets: dict[str, SampleSet], found: OverlapCheck) -> str:
    """Return a sentence naming the duplicates whose alpha channel was dropped, or "" when none was."""
    wanted: dict[str, set[str]] = {}
    for first, second in found.pairs:
        wanted.setdefault(_ROLE_KEYS.get(found.first, found.first), set()).add(first)
        wanted.setdefault(_ROLE_KEYS.get(found.second, found.second), set()).add(second)
    named = [
        name for role, names in wanted.items() if role in sets
        for position, name in enumerate(sets[role].names) if name in names and _sample_has_alpha(sets[role], position)
    ]  # fmt: skip
    if not named:
        return ""
    return (
        f" Note: {len(named)} of these images have an alpha channel, which preprocessing drops (it is not composited), "
        f"e.g. {', '.join(named[:EXAMPLES])}; images that differ only in alpha are identical after it. If the model was "
        "trained on them composited onto a background, composite them the same way before auditing."
    )
