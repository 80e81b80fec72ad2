"""Per-sample noise keys, without torch: what a stored chunk's keys are checked against.

A sample's key is its role code times :data:`ROLE_STRIDE` plus its index in the full source set,
so members, non-members and the control set never share noise streams. The attacks draw their
noise from these keys (:func:`naa_guard.attacks.common.sample_keys`, the same numbers as a torch
tensor); a re-gate from stored chunks needs them too, and must not import torch for that.
"""

from __future__ import annotations

import numpy as np

ROLE_STRIDE = 1 << 40
ROLE_CODES = {"members": 1, "nonmembers": 2, "control": 3}


def sample_keys_array(role: str, indices: np.ndarray | list[int]) -> np.ndarray:
    """Return the int64 noise keys of samples of ``role`` at these source indices."""
    return np.asarray(indices, dtype=np.int64) + np.int64(ROLE_CODES[role] * ROLE_STRIDE)
