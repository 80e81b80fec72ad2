"""The numeric pieces of the distribution-shift check's cross-validation, in numpy: standardised
features, shuffled k folds and average ranks.

Each follows the library routine the check was written with (scikit-learn's ``StandardScaler``
and ``KFold``, scipy's ``rankdata``) operation for operation, so the check's scores, AUC and
p-value are the same bit for bit (tests/test_checks.py compares them); they live here because
importing scikit-learn and scipy.stats costs a re-gate from cached scores more than a second.
"""

from __future__ import annotations

import numpy as np


def standardised(features: np.ndarray) -> np.ndarray:
    """Return ``features`` (n, d) centred and scaled per column, as ``StandardScaler().fit_transform`` does.

    Mean and variance are accumulated in float64 by the corrected two-pass algorithm; a column
    whose variance is within rounding of zero is only centred (scale 1). The result keeps a
    float32 input's dtype; any other input is taken as float64.
    """
    values = np.array(features, dtype=features.dtype if features.dtype in (np.float32, np.float64) else np.float64)
    count = float(values.shape[0])
    total = np.sum(values, axis=0, dtype=np.float64)
    mean = (0.0 + total) / count
    deviations = values - total / count
    correction = np.sum(deviations, axis=0)
    variance = (np.sum(deviations**2, axis=0) - correction**2 / count) / count
    eps = np.finfo(np.float64).eps
    constant = variance <= count * eps * variance + (count * mean * eps) ** 2
    scale = np.sqrt(variance)
    scale[constant] = 1.0
    values -= mean.astype(values.dtype)
    values /= scale.astype(values.dtype)
    return values


def shuffled_folds(n_samples: int, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(train, test)`` index arrays of ``KFold(n_splits, shuffle=True, random_state=seed)``.

    The samples are shuffled once by ``np.random.RandomState(seed)``, cut into ``n_splits`` runs
    (the first ``n_samples % n_splits`` one longer); both index arrays come back sorted.
    """
    if not 2 <= n_splits <= n_samples:
        raise ValueError(f"need 2 <= n_splits <= n_samples; got n_splits={n_splits}, n_samples={n_samples}")
    order = np.arange(n_samples)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n_samples // n_splits, dtype=int)
    sizes[: n_samples % n_splits] += 1
    folds = []
    for stop, size in zip(np.cumsum(sizes), sizes):
        test = np.zeros(n_samples, dtype=bool)
        test[order[stop - size : stop]] = True
        folds.append((np.flatnonzero(~test), np.flatnonzero(test)))
    return folds


def column_ranks(values: np.ndarray) -> np.ndarray:
    """Return the 1-based ranks of each column of (n, B) ``values``, ties given their average rank.

    scipy's ``rankdata(values, axis=0)``: float64 ranks (whole or half numbers, so exact), and a
    column holding a NaN is all NaN.
    """
    n = values.shape[0]
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    position = np.arange(n)[:, None]
    starts = np.ones(ordered.shape, dtype=bool)  # where a run of equal values begins
    starts[1:] = ordered[1:] != ordered[:-1]
    ends = np.ones(ordered.shape, dtype=bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, position, n - 1)[::-1], axis=0)[::-1]
    ranks = np.empty(ordered.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last + 2) / 2.0, axis=0)
    ranks[:, np.isnan(values).any(axis=0)] = np.nan
    return ranks
