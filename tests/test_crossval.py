"""Tests for naa_guard.verdict.crossval: the shift check's numpy standardising, folds and ranks are
scikit-learn's StandardScaler / KFold and scipy's rankdata bit for bit, and so is the whole check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

from naa_guard.verdict.crossval import column_ranks, shuffled_folds, standardised
from naa_guard.verdict.shift import SHIFT_FOLDS, _ridge_cv_scores, classify_features


def _feature_sets(seed: int) -> list[tuple[str, np.ndarray]]:
    """Return (kind, features) cases: plain, offset, constant and near-constant columns, float32, one row per fold."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(4, 600)), int(rng.integers(1, 40))
    plain = rng.normal(size=(n, d))
    odd = rng.normal(size=(n, d)) * 10.0 ** rng.integers(-8, 8, d) + 10.0 ** rng.integers(-3, 9, d)
    odd[:, 0] = 3.25  # constant: only centred
    if d > 1:
        odd[:, 1] = 1e6 + rng.integers(0, 2, n) * 1e-9  # variance within rounding of zero at this offset
    return [("normal", plain), ("offsets and constants", odd), ("float32", odd.astype(np.float32)), ("integers", rng.integers(0, 255, (n, d)))]


@pytest.mark.parametrize("seed", range(10))
def test_standardised_is_standard_scaler_bit_for_bit(seed: int) -> None:
    for kind, features in _feature_sets(seed):
        want = StandardScaler().fit_transform(features)
        got = standardised(features)
        assert got.dtype == want.dtype, kind
        np.testing.assert_array_equal(got, want, err_msg=kind)


@pytest.mark.parametrize(("n_samples", "n_splits", "seed"), [(4, 4, 0), (5, 5, 1), (17, 5, 2), (100, 5, 0), (1797, 5, 0), (2000, 3, 12345), (4000, 5, 2**32 - 1)])
def test_shuffled_folds_are_kfolds(n_samples: int, n_splits: int, seed: int) -> None:
    want = list(KFold(n_splits, shuffle=True, random_state=seed).split(np.zeros((n_samples, 1))))
    got = shuffled_folds(n_samples, n_splits, seed)
    assert len(got) == len(want)
    for (train, test), (train_ref, test_ref) in zip(got, want):
        np.testing.assert_array_equal(train, train_ref)
        np.testing.assert_array_equal(test, test_ref)


def test_shuffled_folds_refuse_more_folds_than_samples() -> None:
    with pytest.raises(ValueError, match="n_splits <= n_samples"):
        shuffled_folds(3, 5, 0)


@pytest.mark.parametrize("seed", range(6))
def test_column_ranks_are_rankdata(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, b = int(rng.integers(1, 500)), int(rng.integers(1, 30))
    for values in (rng.normal(size=(n, b)), rng.integers(0, 4, (n, b)).astype(float), rng.choice([0.0, -0.0, 1.0], (n, b)), np.full((n, b), 7.0)):
        np.testing.assert_array_equal(column_ranks(values), rankdata(values, axis=0))
    with_nan = rng.normal(size=(n, b))
    with_nan[0, 0] = np.nan
    np.testing.assert_array_equal(column_ranks(with_nan), rankdata(with_nan, axis=0))  # NaN == NaN here


def _classify_with_the_libraries(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator, *, seed: int, permutations: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The shift classifier as it was written on scikit-learn and scipy.stats (before crossval.py)."""
    features = StandardScaler().fit_transform(np.concatenate([members, nonmembers]))
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    folds = list(KFold(n_splits=min(SHIFT_FOLDS, len(labels)), shuffle=True, random_state=seed).split(features))
    columns = np.column_stack([labels] + [rng.permutation(labels) for _ in range(permutations)])
    predictions = _ridge_cv_scores(features, columns, folds)
    ranks = rankdata(predictions, axis=0)
    positives = columns.sum(axis=0)
    aucs = ((ranks * columns).sum(axis=0) - positives * (positives + 1) / 2) / (positives * (columns.shape[0] - positives))
    p_value = (1 + int((aucs[1:] >= aucs[0]).sum())) / (permutations + 1)
    return predictions[: len(members), 0], predictions[len(members) :, 0], p_value


@pytest.mark.parametrize(("n_members", "n_nonmembers", "shift"), [(2, 2, 0.0), (24, 30, 0.0), (100, 1697, 0.0), (100, 400, 0.3)])
def test_the_shift_classifier_is_unchanged_bit_for_bit(n_members: int, n_nonmembers: int, shift: float) -> None:
    data = np.random.default_rng(n_members + n_nonmembers)
    members, nonmembers = data.normal(shift, 1, (n_members, 70)), data.normal(0, 1, (n_nonmembers, 70))
    got = classify_features(members, nonmembers, np.random.default_rng(9), seed=9, permutations=199)
    want = _classify_with_the_libraries(members, nonmembers, np.random.default_rng(9), seed=9, permutations=199)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]
