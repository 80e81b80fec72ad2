"""Validity checks: refuse a verdict the audit cannot stand behind (SPEC section 5).

Three checks guard the member / non-member comparison:

- **overlap**: the same image (identical pixels after preprocessing) on both sides makes the
  comparison meaningless; so does a control image that is also a member or a non-member.
- **distribution shift** (model-free, before any attack): a cross-validated ridge classifier on
  downsampled pixels and simple intensity statistics tries to tell members from non-members.
  If it can (AUC above ``checks.shift_auc`` and significant), an attack would measure the
  dataset difference, not membership. Ridge rather than logistic regression because its fit is
  linear in the labels: an exact permutation test of the whole cross-validation then costs
  about one fit, which is what keeps small same-distribution sets from raising false alarms.
- **null control** (optional, after scoring): a set the model never saw, scored against the
  non-members, must give an AUC near 0.5 with every attack; otherwise the pipeline is biased.

Each check raises :class:`AuditInvalidError` with what was found, the numbers and the fix; the
passing results go into every report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.data import SampleSet, sample_digests
from naa_guard.errors import AuditInvalidError
from naa_guard.metrics import evaluate

if TYPE_CHECKING:
    from naa_guard.policy import ChecksSection

__all__ = [
    "ControlCheck", "OverlapCheck", "SetSummary", "ShiftCheck", "ValidityReport", "check_control", "check_overlap",
    "check_samples", "check_shift", "image_features", "shift_classifier", "summarize",
]  # fmt: skip

SHIFT_FOLDS = 5
SHIFT_MAX_PER_SIDE = 2000  # caps the check's cost on big sets; 2000 per side still resolves AUC to ~0.01
SHIFT_GRID = 8  # images are block-averaged to at most 8 x 8 per channel
SHIFT_PIXELS = 256  # pixels per channel read for the intensity statistics
SHIFT_CROP = 32  # side of the centre crop whose edge energy is measured
SHIFT_RIDGE = 1.0  # ridge penalty per training sample, on standardised features
SHIFT_BOOTSTRAP = 200
SHIFT_METHOD = (
    "5-fold cross-validated ridge classifier (scikit-learn Ridge, alpha = n_train) on 8x8 "
    "block-averaged pixels plus per-channel intensity and edge statistics; out-of-fold AUC with a "
    "stratified bootstrap CI; p-value from a label-permutation test of the whole cross-validation"
)
SHIFT_RULE = "flagged when AUC > checks.shift_auc AND permutation p-value < checks.shift_alpha"
EXAMPLES = 5  # duplicate pairs named in an overlap message
SUMMARY_CHUNK = 256  # images decoded at a time by the checks


# ----------------------------------------------------------------------------- streamed summaries


@dataclass(frozen=True)
class SetSummary:
    """What the checks keep of a sample set: one digest per sample, shift features of a capped few.

    Built chunk by chunk (:func:`summarize`), so the checks never hold a whole set's images.
    """

    names: tuple[str, ...]
    source: Path
    digests: tuple[str, ...]
    features: np.ndarray | None  # image_features rows of the samples the shift check uses

    def __len__(self) -> int:
        """Return the number of samples."""
        return len(self.digests)


def summarize_chunk(images: np.ndarray, feature_rows: np.ndarray | None) -> tuple[list[str], np.ndarray | None]:
    """Return the digests of a decoded chunk and the shift features of its rows ``feature_rows``."""
    features = image_features(images[feature_rows]) if feature_rows is not None and len(feature_rows) else None
    return sample_digests(images), features


def chunk_feature_rows(feature_positions: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    """Return the sorted feature positions that fall in start..stop-1, relative to start."""
    if feature_positions is None:
        return None
    return feature_positions[(feature_positions >= start) & (feature_positions < stop)] - start


def merge_summary(samples: SampleSet, parts: list[tuple[list[str], np.ndarray | None]]) -> SetSummary:
    """Return a set's summary from its chunks' (digests, features), in chunk order."""
    features = [part[1] for part in parts if part[1] is not None]
    return SetSummary(samples.names, samples.source, tuple(d for part in parts for d in part[0]), np.concatenate(features) if features else None)


def summarize(samples: SampleSet, feature_positions: np.ndarray | None = None, chunk_size: int = SUMMARY_CHUNK) -> SetSummary:
    """Return the set's summary, decoding ``chunk_size`` images at a time."""
    parts = []
    for start in range(0, len(samples), chunk_size):
        stop = min(start + chunk_size, len(samples))
        parts.append(summarize_chunk(samples.decode(start, stop), chunk_feature_rows(feature_positions, start, stop)))
    return merge_summary(samples, parts)


def _summary(samples: SampleSet | SetSummary, feature_positions: np.ndarray | None = None) -> SetSummary:
    return samples if isinstance(samples, SetSummary) else summarize(samples, feature_positions)


def shift_feature_positions(n_members: int, n_nonmembers: int, settings: ChecksSection, seed: int) -> dict[str, np.ndarray]:
    """Return, by role, the positions whose shift features the checks need (none when the check is off)."""
    if settings.shift_auc is None or min(n_members, n_nonmembers) < 2:
        return {}
    members, nonmembers, _ = shift_sample_positions(n_members, n_nonmembers, seed)
    return {"members": members, "nonmembers": nonmembers}


# ----------------------------------------------------------------------------- overlap


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
    first, second = _summary(first), _summary(second)
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


# ----------------------------------------------------------------------------- distribution shift


@dataclass(frozen=True)
class ShiftCheck:
    """The model-free member / non-member classifier's result."""

    auc: float | None  # out-of-fold AUC, members as positives; None when skipped
    ci: tuple[float, float] | None
    p_value: float | None
    limit: float | None  # checks.shift_auc; None when the check is disabled
    alpha: float
    n_members: int  # samples the classifier used (after the per-side cap)
    n_nonmembers: int
    flagged: bool
    skipped: str | None = None  # why the check did not run

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, with the method and the rule."""
        return {
            "auc": self.auc, "ci": list(self.ci) if self.ci else None, "p_value": self.p_value,
            "limit": self.limit, "alpha": self.alpha, "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers, "flagged": self.flagged, "skipped": self.skipped,
            "method": SHIFT_METHOD, "rule": SHIFT_RULE,
        }  # fmt: skip

    def summary(self) -> str:
        """Return the one-line report form."""
        if self.skipped:
            return f"distribution-shift check skipped: {self.skipped}"
        assert self.auc is not None and self.ci is not None and self.p_value is not None
        verdict = "FLAGGED" if self.flagged else "ok"
        return (
            f"distribution-shift check: classifier AUC {self.auc:.3f} (CI {self.ci[0]:.3f}-{self.ci[1]:.3f}, "
            f"p={self.p_value:.2g}; limit {self.limit:.2f} at p<{self.alpha:g}) on {self.n_members}/{self.n_nonmembers} images: {verdict}"
        )


def _block_means(images: np.ndarray, grid: int) -> np.ndarray:
    """Return (N, C, g, g) float64 block averages of (N, C, H, W) images, g = min(grid, H, W)."""
    _, _, height, width = images.shape
    rows = np.linspace(0, height, min(grid, height) + 1).astype(int)[:-1]
    cols = np.linspace(0, width, min(grid, width) + 1).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(images, rows, axis=2, dtype=np.float64), cols, axis=3)
    counts = np.outer(np.diff([*rows, height]), np.diff([*cols, width]))
    return sums / counts


def image_features(images: np.ndarray) -> np.ndarray:
    """Return (N, F) float64 features: block-averaged pixels plus intensity and edge statistics.

    The statistics read at most ``SHIFT_PIXELS`` evenly spaced pixels per channel and the edges
    of a centre crop of at most ``SHIFT_CROP`` pixels, so big images cost little more than small ones.
    """
    n, channels, height, width = images.shape
    pixels = images.reshape(n, channels, -1)[:, :, :: max(1, height * width // SHIFT_PIXELS)].astype(np.float64)
    top, left = max(0, (height - SHIFT_CROP) // 2), max(0, (width - SHIFT_CROP) // 2)
    crop = images[:, :, top : top + SHIFT_CROP, left : left + SHIFT_CROP].astype(np.float64)
    stats = [
        pixels.mean(axis=2), pixels.std(axis=2), pixels.min(axis=2), pixels.max(axis=2),
        *np.percentile(pixels, [5, 50, 95], axis=2),
        (pixels <= -0.98).mean(axis=2), (pixels >= 0.98).mean(axis=2),  # share of saturated pixels
        np.abs(np.diff(crop, axis=2)).mean(axis=(2, 3)), np.abs(np.diff(crop, axis=3)).mean(axis=(2, 3)),  # edge energy
    ]  # fmt: skip
    return np.concatenate([_block_means(images, SHIFT_GRID).reshape(n, -1), *stats], axis=1)


def shift_sample_positions(n_members: int, n_nonmembers: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Return the positions of the members and non-members the shift classifier uses, and its generator.

    At most ``SHIFT_MAX_PER_SIDE`` per side, seeded; the generator continues from there (permutations).
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for n in (n_members, n_nonmembers):
        chosen.append(np.arange(n) if n <= SHIFT_MAX_PER_SIDE else np.sort(rng.choice(n, SHIFT_MAX_PER_SIDE, replace=False)))
    return chosen[0], chosen[1], rng


def _column_aucs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the AUC of each column of (n, B) scores against (n, B) 0/1 labels (ties count 1/2)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    positives = labels.sum(axis=0)
    negatives = labels.shape[0] - positives
    return ((ranks * labels).sum(axis=0) - positives * (positives + 1) / 2) / (positives * negatives)


def _ridge_cv_scores(features: np.ndarray, labels: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Return out-of-fold ridge predictions for every column of (n, B) labels at once.

    With the folds fixed, a ridge fit is linear in the labels (``beta = A y``), so the observed
    labels and every permutation of them share one solve per fold: that is what makes an exact
    permutation test of the whole cross-validation cost about as much as a single fit.
    """
    predictions = np.empty_like(labels)
    for train, test in folds:
        centre = features[train].mean(axis=0)
        centred = features[train] - centre
        penalty = SHIFT_RIDGE * len(train) * np.eye(features.shape[1])
        solver = np.linalg.solve(centred.T @ centred + penalty, centred.T)  # (d, n_train)
        predictions[test] = (features[test] - centre) @ (solver @ labels[train]) + labels[train].mean(axis=0)
    return predictions


def shift_classifier(members: np.ndarray, nonmembers: np.ndarray, *, seed: int, permutations: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (member scores, non-member scores, permutation p-value) of the cross-validated classifier.

    Scores are out-of-fold predictions (higher = looks like a member) for the capped sets; the
    p-value is the share of label permutations whose cross-validated AUC reaches the observed one.
    """
    kept_members, kept_nonmembers, rng = shift_sample_positions(len(members), len(nonmembers), seed)
    return classify_features(image_features(members[kept_members]), image_features(nonmembers[kept_nonmembers]), rng, seed=seed, permutations=permutations)


def classify_features(member_features: np.ndarray, nonmember_features: np.ndarray, rng: np.random.Generator, *, seed: int, permutations: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Return :func:`shift_classifier`'s result from the capped samples' features.

    ``rng`` is the generator :func:`shift_sample_positions` returned: it draws the permutations.
    """
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    # Standardising without labels leaks nothing, so it may see every image.
    features = StandardScaler().fit_transform(np.concatenate([member_features, nonmember_features]))
    labels = np.r_[np.ones(len(member_features)), np.zeros(len(nonmember_features))]
    # Folds that ignore the labels keep the permutation test exact.
    folds = list(KFold(n_splits=min(SHIFT_FOLDS, len(labels)), shuffle=True, random_state=seed).split(features))
    columns = np.column_stack([labels] + [rng.permutation(labels) for _ in range(permutations)])
    predictions = _ridge_cv_scores(features, columns, folds)  # column 0: the observed labels
    aucs = _column_aucs(predictions, columns)
    scores = predictions[:, 0]
    p_value = (1 + int((aucs[1:] >= aucs[0]).sum())) / (permutations + 1)
    return scores[: len(member_features)], scores[len(member_features) :], p_value


def check_shift(members: SampleSet | SetSummary, nonmembers: SampleSet | SetSummary, settings: ChecksSection, seed: int) -> ShiftCheck:
    """Return the distribution-shift check; raise AuditInvalidError when the sets are told apart.

    Rule: flagged only when the classifier's out-of-fold AUC is above ``checks.shift_auc`` AND
    significantly above 0.5 (label-permutation p-value below ``checks.shift_alpha``). The
    significance test matters on small sets: a cross-validated AUC of two random 24-image sets
    from one distribution spreads 0.5 +- 0.12, so an AUC limit alone would raise false alarms;
    a plain rank-sum p-value of out-of-fold scores is too optimistic (each fold has its own
    model), whereas permuting the labels through the whole cross-validation is exact.
    """
    n_members, n_nonmembers = min(len(members), SHIFT_MAX_PER_SIDE), min(len(nonmembers), SHIFT_MAX_PER_SIDE)
    common = {"limit": settings.shift_auc, "alpha": settings.shift_alpha, "n_members": n_members, "n_nonmembers": n_nonmembers}
    if settings.shift_auc is None:
        return ShiftCheck(None, None, None, flagged=False, skipped="disabled by checks.shift_auc: null", **common)
    if min(n_members, n_nonmembers) < 2:
        return ShiftCheck(None, None, None, flagged=False, skipped="fewer than 2 images on one side", **common)
    # Enough permutations that p can fall below alpha with room to spare (199 at alpha 0.01).
    permutations = max(199, round(2 / settings.shift_alpha) - 1)
    kept_members, kept_nonmembers, rng = shift_sample_positions(len(members), len(nonmembers), seed)
    members, nonmembers = _summary(members, kept_members), _summary(nonmembers, kept_nonmembers)
    assert members.features is not None and nonmembers.features is not None
    member_scores, nonmember_scores, p_value = classify_features(members.features, nonmembers.features, rng, seed=seed, permutations=permutations)
    report = evaluate(member_scores, nonmember_scores, n_bootstrap=SHIFT_BOOTSTRAP, seed=seed)
    low, high = report.metrics["auc"].ci
    ci = (low, high) if report.direction == "members_higher" else (1.0 - high, 1.0 - low)
    flagged = report.auc > settings.shift_auc and p_value < settings.shift_alpha
    check = ShiftCheck(report.auc, ci, p_value, flagged=flagged, **common)
    if flagged:
        raise AuditInvalidError(
            f"members ({members.source}) and non-members ({nonmembers.source}) come from different "
            f"distributions: a model-free classifier on image statistics alone tells them apart with "
            f"cross-validated AUC {report.auc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, p={p_value:.2g}; limit "
            f"checks.shift_auc {settings.shift_auc:.2f} at p<{settings.shift_alpha:g}; {n_members} members / "
            f"{n_nonmembers} non-members). An attack would measure the dataset difference, not membership. "
            f"Fix: draw the non-members from the same source and preprocessing as the members (e.g. a "
            f"random held-out split of the training data); only if the difference is known to be harmless, "
            f"raise checks.shift_auc or set it to null."
        )
    return check


# ----------------------------------------------------------------------------- null control


@dataclass(frozen=True)
class ControlCheck:
    """One attack's control-vs-non-members AUC, which should be 0.5 within its tolerance."""

    attack: str
    auc: float  # control as positives
    ci: tuple[float, float]
    tolerance: float  # CI half-width + checks.control_margin
    n_control: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"auc": self.auc, "ci": list(self.ci), "tolerance": self.tolerance, "n_control": self.n_control, "passed": self.passed}


def control_auc(attack: str, control_scores: np.ndarray, nonmember_scores: np.ndarray, *, margin: float, confidence: float, seed: int) -> ControlCheck:
    """Return the null-control result of one attack: control AUC against the non-members."""
    report = evaluate(control_scores, nonmember_scores, confidence=confidence, seed=seed)
    low, high = report.metrics["auc"].ci
    ci = (low, high) if report.direction == "members_higher" else (1.0 - high, 1.0 - low)
    tolerance = (ci[1] - ci[0]) / 2.0 + margin
    return ControlCheck(attack, report.auc, ci, tolerance, len(control_scores), abs(report.auc - 0.5) <= tolerance)


def check_control(scores: dict[str, tuple[np.ndarray, np.ndarray]], control: SampleSet, *, margin: float, confidence: float, seed: int) -> dict[str, ControlCheck]:
    """Return each attack's null-control result; raise AuditInvalidError when one is biased.

    ``scores`` maps an attack to its (control scores, non-member scores).
    """
    checks = {name: control_auc(name, c, n, margin=margin, confidence=confidence, seed=seed) for name, (c, n) in scores.items()}
    failed = [check for check in checks.values() if not check.passed]
    if failed:
        details = "; ".join(
            f"{c.attack} AUC {c.auc:.3f} (CI {c.ci[0]:.3f}-{c.ci[1]:.3f}, allowed 0.5 +- {c.tolerance:.3f})" for c in failed
        )
        raise AuditInvalidError(
            f"the null control failed: the control set {control.source} ({len(control)} images declared unseen by the "
            f"model) is told apart from the non-members by {details}; a set the model never saw must "
            f"score like the non-members (AUC 0.5 within the CI half-width + checks.control_margin {margin:g}). "
            f"The pipeline is biased, so member AUCs would not measure membership. Fix: make the control "
            f"and the non-members two random held-out parts of one source with the same preprocessing, and "
            f"make sure neither contains training images."
        )
    return checks


# ----------------------------------------------------------------------------- report


@dataclass
class ValidityReport:
    """The results of every validity check that ran, for reports."""

    overlap: list[OverlapCheck] = field(default_factory=list)
    shift: ShiftCheck | None = None
    control: dict[str, ControlCheck] = field(default_factory=dict)
    n_control: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "overlap": [check.to_dict() for check in self.overlap],
            "shift": self.shift.to_dict() if self.shift else None,
            "control": {name: check.to_dict() for name, check in self.control.items()} if self.n_control is not None else None,
        }

    def summary_lines(self) -> list[str]:
        """Return one line per check for the terminal and Markdown reports."""
        lines = []
        if self.overlap:
            sets = ", ".join(f"{c.first}/{c.second}" for c in self.overlap)
            lines.append(f"overlap check: no identical images between {sets}: ok")
        if self.shift is not None:
            lines.append(self.shift.summary())
        if self.n_control is None:
            lines.append("null control: not configured (set data.control to a second held-out set to check the pipeline)")
        for name, check in self.control.items():
            lines.append(
                f"null control ({check.n_control} images): {name} AUC {check.auc:.3f} "
                f"(CI {check.ci[0]:.3f}-{check.ci[1]:.3f}, allowed 0.5 +- {check.tolerance:.3f}): ok"
            )
        return lines


# (role -> (set, feature positions or None)) -> role -> summary: local by default, or spread over ranks
Summarizer = Callable[[dict[str, tuple[SampleSet, "np.ndarray | None"]]], dict[str, SetSummary]]


def _summarize_here(sets: dict[str, tuple[SampleSet, np.ndarray | None]]) -> dict[str, SetSummary]:
    return {role: summarize(samples, positions) for role, (samples, positions) in sets.items()}


def check_samples(members: SampleSet, nonmembers: SampleSet, control: SampleSet | None, settings: ChecksSection, *, seed: int, summarizer: Summarizer | None = None) -> ValidityReport:
    """Return the model-free checks' results (overlap, then shift); raise AuditInvalidError on a failure.

    Every set is streamed once through ``summarizer`` (default: here, chunk by chunk), which
    also surfaces any image that cannot be decoded before a model is loaded.
    """
    report = ValidityReport(n_control=None if control is None else len(control))
    positions = shift_feature_positions(len(members), len(nonmembers), settings, seed)
    sets = {"members": members, "nonmembers": nonmembers, **({"control": control} if control is not None else {})}
    summaries = (summarizer or _summarize_here)({role: (samples, positions.get(role)) for role, samples in sets.items()})
    explain = partial(alpha_explanation, sets)  # the alpha note must reach the user before an overlap stops the audit
    report.overlap.append(check_overlap(summaries["members"], summaries["nonmembers"], "members", "non-members", explain=explain))
    if control is not None:
        # A control image that is also a member (or a non-member) would make the null control vacuous.
        report.overlap.append(check_overlap(summaries["members"], summaries["control"], "members", "control set", explain=explain))
        report.overlap.append(check_overlap(summaries["nonmembers"], summaries["control"], "non-members", "control set", explain=explain))
    report.shift = check_shift(summaries["members"], summaries["nonmembers"], settings, seed)
    return report
