"""Tests for naa_guard.verdict.validity (overlap, distribution shift, null control) and for how the audit
applies them, plus the resolution policy of TPR gates and the checks' place in every report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import OVERFIT, make_images, write_policy

from naa_guard.audit import AuditResult, audit
from naa_guard.demo import digits_split
from naa_guard.errors import AuditInvalidError
from naa_guard.policy import ChecksSection, load_policy
from naa_guard.reports.markdown import to_markdown
from naa_guard.reports.text import format_table
from naa_guard.samples import SampleSet, list_samples, load_samples
from naa_guard.samples.summary import image_features
from naa_guard.verdict.control import check_control
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import evaluate
from naa_guard.verdict.overlap import check_overlap, find_overlap
from naa_guard.verdict.shift import SHIFT_MAX_PER_SIDE, SHIFT_RIDGE, _ridge_cv_scores, check_shift, shift_classifier
from naa_guard.verdict.validity import check_samples

DEFAULTS = ChecksSection()


def _set(images: np.ndarray, name: str = "set.npz") -> SampleSet:
    """Return a SampleSet over float images in [-1, 1], named like an array file's samples."""
    n = len(images)
    return SampleSet.from_images(images.astype(np.float32), tuple(f"{name}[{i}]" for i in range(n)), np.arange(n), (None,) * n, Path(name), ())


def _uint8_set(images: np.ndarray, name: str = "set.npz") -> SampleSet:
    """Return a SampleSet over uint8 N,H,W images, scaled as the data loader does."""
    return _set((images.astype(np.float32) / 127.5 - 1.0)[:, None], name)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as uint8 N,8,8 images and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images / 16.0 * 255.0).astype(np.uint8), digits.target


# ----------------------------------------------------------------------------- overlap


def test_find_overlap_names_every_duplicate_pair() -> None:
    rng = np.random.default_rng(0)
    members = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    nonmembers = rng.integers(0, 256, (10, 8, 8), dtype=np.uint8)
    nonmembers[[2, 6]] = members[[4, 1]]
    found = find_overlap(_uint8_set(members, "m.npz"), _uint8_set(nonmembers, "n.npz"), "members", "non-members")
    assert found.pairs == (("m.npz[4]", "n.npz[2]"), ("m.npz[1]", "n.npz[6]"))
    assert found.to_dict()["count"] == 2


def test_overlap_message_counts_and_names_at_most_five_examples() -> None:
    images = np.random.default_rng(1).integers(0, 256, (8, 8, 8), dtype=np.uint8)
    with pytest.raises(AuditInvalidError) as caught:
        check_overlap(_uint8_set(images, "m.npz"), _uint8_set(images, "n.npz"), "members", "non-members")
    message = str(caught.value)
    assert message.startswith("8 image(s) appear in both the members")
    assert "m.npz[0] = n.npz[0]" in message and "and 3 more" in message and "n.npz[6]" not in message
    assert "identical pixels after preprocessing" in message and "Fix:" in message


def test_distinct_sets_have_no_overlap() -> None:
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (12, 8, 8), dtype=np.uint8) for _ in range(2))
    assert check_overlap(_uint8_set(a), _uint8_set(b), "members", "non-members").pairs == ()


# ----------------------------------------------------------------------------- distribution shift


def test_ridge_closed_form_matches_scikit_learn_ridge() -> None:
    """The batched closed form is scikit-learn's Ridge, fold by fold (so the permutations are too)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    rng = np.random.default_rng(3)
    features, labels = rng.normal(size=(60, 12)), rng.integers(0, 2, 60).astype(float)
    folds = list(KFold(5, shuffle=True, random_state=0).split(features))
    ours = _ridge_cv_scores(features, labels[:, None], folds)[:, 0]
    for train, test in folds:
        reference = Ridge(alpha=SHIFT_RIDGE * len(train)).fit(features[train], labels[train]).predict(features[test])
        np.testing.assert_allclose(ours[test], reference, rtol=1e-8, atol=1e-10)


def test_image_features_see_intensity_and_keep_one_row_per_image() -> None:
    images = np.random.default_rng(4).uniform(-1, 1, (5, 3, 32, 32))
    features = image_features(images)
    assert features.shape == (5, 3 * 8 * 8 + 3 * 11)
    brighter = image_features(np.clip(images + 0.5, -1, 1))
    assert (brighter[:, -33:-30].mean() > features[:, -33:-30].mean())  # per-channel means come first among the stats


def test_shift_check_catches_members_and_nonmembers_from_different_sources() -> None:
    """Members are digits 0-4, non-members digits 5-9: two sources, not a random split."""
    images, labels = _digits()
    members, nonmembers = images[labels < 5][:60], images[labels >= 5][:60]
    with pytest.raises(AuditInvalidError) as caught:
        check_shift(_uint8_set(members, "a.npz"), _uint8_set(nonmembers, "b.npz"), DEFAULTS, seed=0)
    message = str(caught.value)
    assert "come from different distributions" in message and "60 members / 60 non-members" in message
    assert "checks.shift_auc 0.60" in message and "p=" in message and "same source" in message


def test_shift_check_catches_a_brightness_difference() -> None:
    """Same digits, but the non-members were exported darker (a preprocessing difference)."""
    images, _ = _digits()
    members, nonmembers = images[:50], (images[50:100] * 0.8).astype(np.uint8)
    with pytest.raises(AuditInvalidError, match="different distributions"):
        check_shift(_uint8_set(members), _uint8_set(nonmembers), DEFAULTS, seed=0)


@pytest.mark.parametrize("seed", range(6))
def test_shift_check_does_not_flag_small_same_distribution_sets(seed: int) -> None:
    """24 vs 24 random images of one distribution: the AUC alone can reach 0.7, the p-value rules it out."""
    rng = np.random.default_rng(100 + seed)
    members, nonmembers = (rng.integers(0, 256, (24, 8, 8), dtype=np.uint8) for _ in range(2))
    check = check_shift(_uint8_set(members), _uint8_set(nonmembers), DEFAULTS, seed=seed)
    assert not check.flagged and check.p_value is not None and check.auc is not None


def test_shift_check_does_not_flag_the_committed_fixture() -> None:
    members = load_samples(OVERFIT / "members.npz", size=8, channels=1)
    nonmembers = load_samples(OVERFIT / "nonmembers.npz", size=8, channels=1, role="nonmembers")
    check = check_shift(members, nonmembers, DEFAULTS, seed=0)
    assert not check.flagged and check.auc is not None and check.auc < 0.6
    assert (check.n_members, check.n_nonmembers) == (100, 300)


def test_shift_check_does_not_flag_the_demo_split() -> None:
    """The demo's 100 members against its 1697 non-members: one random split of the digits."""
    members, nonmembers = digits_split(100, seed=0)
    check = check_shift(_uint8_set(members), _uint8_set(nonmembers), DEFAULTS, seed=0)
    assert not check.flagged and check.auc is not None and check.auc < 0.6
    assert check.to_dict()["rule"].startswith("flagged when AUC > checks.shift_auc AND")


def test_a_high_auc_that_is_not_significant_is_not_flagged() -> None:
    """The rule needs both: AUC above the limit and p below alpha (3 vs 3 images cannot be significant)."""
    images, _ = _digits()
    check = check_shift(_uint8_set(images[:3]), _uint8_set((images[3:6] * 0.5).astype(np.uint8)), DEFAULTS, seed=0)
    assert check.auc is not None and check.auc > 0.6
    assert check.p_value is not None and check.p_value >= 0.01 and not check.flagged


def test_shift_check_can_be_disabled_and_says_so() -> None:
    images, labels = _digits()
    check = check_shift(_uint8_set(images[labels < 5][:40]), _uint8_set(images[labels >= 5][:40]), ChecksSection(shift_auc=None), seed=0)
    assert check.skipped and not check.flagged and "disabled" in check.summary()


def test_shift_classifier_caps_big_sets_and_is_seeded() -> None:
    rng = np.random.default_rng(5)
    members, nonmembers = rng.uniform(-1, 1, (SHIFT_MAX_PER_SIDE + 300, 1, 8, 8)), rng.uniform(-1, 1, (400, 1, 8, 8))
    first = shift_classifier(members, nonmembers, seed=7, permutations=19)
    again = shift_classifier(members, nonmembers, seed=7, permutations=19)
    assert len(first[0]) == SHIFT_MAX_PER_SIDE and len(first[1]) == 400
    np.testing.assert_array_equal(first[0], again[0])
    assert first[2] == again[2]


# ----------------------------------------------------------------------------- null control


def test_control_check_passes_a_same_distribution_control() -> None:
    rng = np.random.default_rng(6)
    control, nonmembers = rng.normal(size=200), rng.normal(size=300)
    checks = check_control({"naa": (control, nonmembers)}, _set(np.zeros((200, 1, 2, 2))), margin=0.05, confidence=0.95, seed=0)
    assert checks["naa"].passed and abs(checks["naa"].auc - 0.5) <= checks["naa"].tolerance


@pytest.mark.parametrize("shift", [0.8, -0.8])
def test_control_check_flags_a_biased_control_in_either_direction(shift: float) -> None:
    rng = np.random.default_rng(7)
    control, nonmembers = rng.normal(size=200) + shift, rng.normal(size=300)
    with pytest.raises(AuditInvalidError) as caught:
        check_control({"naa": (control, nonmembers)}, _set(np.zeros((200, 1, 2, 2)), "ctl.npz"), margin=0.05, confidence=0.95, seed=0)
    message = str(caught.value)
    assert "null control failed" in message and "ctl.npz" in message and "naa AUC" in message
    assert "allowed 0.5 +-" in message and "pipeline is biased" in message


def test_control_tolerance_is_the_ci_half_width_plus_the_margin() -> None:
    rng = np.random.default_rng(8)
    control, nonmembers = rng.normal(size=50), rng.normal(size=50)
    check = check_control({"naa": (control, nonmembers)}, _set(np.zeros((50, 1, 2, 2))), margin=0.05, confidence=0.95, seed=0)["naa"]
    report = evaluate(control, nonmembers, seed=0)
    low, high = report.metrics["auc"].ci
    assert check.tolerance == pytest.approx((high - low) / 2 + 0.05)


# ----------------------------------------------------------------------------- through the audit

OVERFIT_POLICY = """
version: 1
name: overfit
model: {{path: {root}/model}}
data: {{members: {root}/members.npz, nonmembers: {root}/nonmembers.npz, control: {control}, limit: 100}}
attacks: {{naa: {{t: 40, stride: 10, noise: scaled, sigma: 0.1}}}}
thresholds: {{auc: 0.6, tpr_at_1pct_fpr: 0.05, unresolvable: warn}}
runtime: {{device: cpu, batch_size: 128}}
"""


@pytest.fixture(scope="module")
def overfit_audit(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    """Return the audit of the overfit fixture with control_a as the null control."""
    folder = tmp_path_factory.mktemp("overfit")
    policy = write_policy(folder / "overfit.naa.yaml", OVERFIT_POLICY.format(root=OVERFIT, control=OVERFIT / "control_a.npz"))
    return audit(load_policy(policy), progress=False)


def test_a_same_distribution_control_passes_on_a_leaky_model(overfit_audit: AuditResult) -> None:
    assert overfit_audit.checks is not None
    control = overfit_audit.checks.control["naa"]
    assert control.passed and control.n_control == 100
    assert overfit_audit.attacks["naa"].leakage.auc > 0.9  # the model leaks; the control does not


def test_every_report_carries_the_checks(overfit_audit: AuditResult) -> None:
    data = json.loads(json.dumps(overfit_audit.to_dict()))
    shift = data["checks"]["shift"]
    assert 0.0 <= shift["auc"] <= 1.0 and len(shift["ci"]) == 2 and "permutation" in shift["method"]
    assert data["checks"]["control"]["naa"]["passed"] is True
    assert [entry["count"] for entry in data["checks"]["overlap"]] == [0, 0, 0]
    table, markdown = format_table(overfit_audit), to_markdown(overfit_audit)
    for text in (table, markdown):
        assert f"classifier AUC {shift['auc']:.3f}" in text
        assert "null control (100 images): naa AUC" in text and "overlap check" in text


def test_a_control_of_near_duplicate_members_fails_the_audit(tmp_path: Path) -> None:
    """Members with a few pixels nudged: not byte-identical, but the model recognises them."""
    members = np.load(OVERFIT / "members.npz")["images"].astype(np.int16)
    members[:, 0, 0] = np.where(members[:, 0, 0] > 0, members[:, 0, 0] - 1, 1)
    np.savez(tmp_path / "leaked.npz", images=members.astype(np.uint8))
    policy = write_policy(tmp_path / "p.naa.yaml", OVERFIT_POLICY.format(root=OVERFIT, control=tmp_path / "leaked.npz"))
    with pytest.raises(AuditInvalidError, match=r"null control failed.*leaked\.npz.*naa AUC 0\.9"):
        audit(load_policy(policy), progress=False)


def test_a_control_that_repeats_members_is_an_overlap(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.naa.yaml", OVERFIT_POLICY.format(root=OVERFIT, control=OVERFIT / "members.npz"))
    with pytest.raises(AuditInvalidError, match=r"100 image\(s\) appear in both the members .* and the control set"):
        audit(load_policy(policy), progress=False)


def test_tiny_audit_reports_shift_and_no_control(tiny_setup: Path) -> None:
    result = audit(load_policy(tiny_setup), progress=False)
    assert result.checks is not None and result.checks.shift is not None and not result.checks.shift.flagged
    assert result.to_dict()["checks"]["control"] is None
    assert "null control: not configured" in format_table(result)


# ----------------------------------------------------------------------------- resolution of gates


def _gates(tmp_path: Path, thresholds: str, n_nonmembers: int = 300) -> list:
    make_images(tmp_path / "m.npz", 2)
    policy = load_policy(write_policy(tmp_path / "p.naa.yaml", f"""
        version: 1
        model: {{path: ./model}}
        data: {{members: ./m.npz, nonmembers: ./m.npz}}
        thresholds: {thresholds}
        """))  # fmt: skip
    rng = np.random.default_rng(9)
    leakage = evaluate(rng.normal(size=100) + 1.0, rng.normal(size=n_nonmembers), seed=0)
    return evaluate_gates(policy, "naa", leakage)


def test_an_unresolvable_tpr_gate_errors_by_default_with_the_count_needed(tmp_path: Path) -> None:
    auc_gate, tpr_gate = _gates(tmp_path, "{auc: 0.6, tpr_at_1pct_fpr: 0.05}")
    assert tpr_gate.status == "error" and not tpr_gate.passed
    assert "cannot be resolved with 300 non-members" in tpr_gate.message and "at least 1000 non-members" in tpr_gate.message
    assert "thresholds.unresolvable: warn" in tpr_gate.message and auc_gate.status == "fail"


def test_unresolvable_warn_evaluates_the_gate_and_carries_a_warning(tmp_path: Path) -> None:
    _, tpr_gate = _gates(tmp_path, "{auc: 0.6, tpr_at_1pct_fpr: 0.05, unresolvable: warn}")
    assert tpr_gate.status == "fail" and "exceeds limit 0.050" in tpr_gate.message
    assert tpr_gate.warning is not None and "at least 1000 non-members" in tpr_gate.warning
    assert tpr_gate.to_dict()["warning"] == tpr_gate.warning


def test_a_resolvable_tpr_gate_has_no_warning(tmp_path: Path) -> None:
    _, tpr_gate = _gates(tmp_path, "{auc: 0.6, tpr_at_1pct_fpr: 0.05}", n_nonmembers=1000)
    # Members shifted by one standard deviation: TPR at 1% FPR is about Phi(1 - 2.33) = 0.09 > 0.05.
    assert tpr_gate.status == "fail" and tpr_gate.warning is None and 0.05 < tpr_gate.value < 0.2


def test_auc_gates_report_their_ci_width(tmp_path: Path) -> None:
    (auc_gate,) = _gates(tmp_path, "{auc: 0.6, tpr_at_1pct_fpr: null}")
    width = auc_gate.ci[1] - auc_gate.ci[0]
    assert f"CI width {width:.3f}" in auc_gate.message
    assert auc_gate.to_dict()["ci_width"] == pytest.approx(width)


def test_unresolvable_warnings_reach_the_audit_result(tiny_setup: Path) -> None:
    text = tiny_setup.read_text().replace("tpr_at_1pct_fpr: null", "tpr_at_1pct_fpr: 0.5, unresolvable: warn")
    tiny_setup.write_text(text)
    result = audit(load_policy(tiny_setup), progress=False)
    assert not result.errored and any("at least 1000 non-members" in w for w in result.warnings)
    assert "warning: naa TPR@1%FPR cannot be resolved" in format_table(result)


def test_an_overlap_of_images_that_differ_only_in_alpha_says_the_alpha_was_dropped(tmp_path: Path) -> None:
    from PIL import Image

    for side, alpha in (("members", 255), ("nonmembers", 0)):
        for i in range(3):
            pixels = np.zeros((8, 8, 4), np.uint8)
            pixels[..., :3], pixels[..., 3] = 40 * i + 10, alpha
            (tmp_path / side).mkdir(exist_ok=True)
            Image.fromarray(pixels, "RGBA").save(tmp_path / side / f"{i}.png")
    members, nonmembers = (list_samples(tmp_path / side, size=8, channels=3, role=side) for side in ("members", "nonmembers"))
    with pytest.raises(AuditInvalidError, match=r"(?s)3 image\(s\) appear in both.*alpha channel, which preprocessing drops.*differ only in alpha"):
        check_samples(members, nonmembers, None, ChecksSection(shift_auc=None), seed=0)
    opaque = _uint8_set(np.full((3, 8, 8), 7, np.uint8))
    with pytest.raises(AuditInvalidError) as caught:  # no alpha anywhere: no note
        check_overlap(opaque, opaque, "members", "non-members")
    assert "alpha" not in str(caught.value)
