"""The distribution-shift check (model-free, before any attack): a cross-validated ridge classifier
on downsampled pixels and simple intensity statistics tries to tell members from non-members.
If it can (AUC above ``checks.shift_auc`` and significant), an attack would measure the dataset
difference, not membership. Ridge rather than logistic regression because its fit is linear in
the labels: an exact permutation test of the whole cross-validation then costs about one fit,
which is what keeps small same-distribution sets from raising false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from naa_guard.errors import AuditInvalidError
from naa_guard.samples import SampleSet
from naa_guard.samples.summary import SetSummary, image_features, summary
from naa_guard.verdict.crossval import column_ranks, shuffled_folds, standardised
from naa_guard.verdict.leakage import evaluate

if TYPE_CHECKING:
    from naa_guard.policy import ChecksSection


SHIFT_FOLDS = 5


SHIFT_MAX_PER_SIDE = 2000  # caps the check's cost on big sets; 2000 per side still resolves AUC to ~0.01


SHIFT_RIDGE = 1.0  # ridge penalty per training sample, on standardised features


SHIFT_BOOTSTRAP = 200


SHIFT_METHOD = (
    "5-fold cross-validated ridge classifier (scikit-learn Ridge, alpha = n_train) on 8x8 "
    "block-averaged pixels plus per-channel intensity and edge statistics; out-of-fold AUC with a "
    "stratified bootstrap CI; p-value from a label-permutation test of the whole cross-validation"
)


SHIFT_RULE = "flagged when AUC > checks.shift_auc AND permutation p-value < checks.shift_alpha"


def shift_feature_positions(n_members: int, n_nonmembers: int, settings: ChecksSection, seed: int) -> dict[str, np.ndarray]:
    """Return, by role, the positions whose shift features the checks need (none when the check is off)."""
    if settings.shift_auc is None or min(n_members, n_nonmembers) < 2:
        return {}
    members, nonmembers, _ = shift_sample_positions(n_members, n_nonmembers, seed)
    return {"members": members, "nonmembers": nonmembers}


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
    ranks = column_ranks(scores)
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
    # Standardising without labels leaks nothing, so it may see every image.
    features = standardised(np.concatenate([member_features, nonmember_features]))
    labels = np.r_[np.ones(len(member_features)), np.zeros(len(nonmember_features))]
    # Folds that ignore the labels keep the permutation test exact.
    folds = shuffled_folds(len(labels), min(SHIFT_FOLDS, len(labels)), seed)
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
    members, nonmembers = summary(members, kept_members), summary(nonmembers, kept_nonmembers)
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
