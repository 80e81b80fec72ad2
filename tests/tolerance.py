"""How close two score arrays must be when they were computed along different paths.

Scores are computed in float32 (unit roundoff u = 6e-8). Another batch size or chunking, another
process (its own thread split), or another CPU (its SIMD width, FMA contraction, the MKL/oneDNN
kernel chosen for the shape and the CPU) sums the same terms in another order. torch promises no
bit identity across any of these; each reduction of n terms may move by about n*u of the sum of
its terms' magnitudes, and the errors compound through the model's layers. Observed differences
are 1e-7 to 1e-6 of a score's magnitude; a real change (another noise draw, another sample, a
lost batch) moves scores by 1e-2 or more. Bit identity is kept only where the same arithmetic
runs on the same inputs in the same process (a cache or chunk read back, a recomputation).
"""

from __future__ import annotations

import numpy as np

# Same machine, other path (batch size, chunking, process): float32 reordering, 10x margin over the observed 1e-6.
SAME_MACHINE = 1e-5
# Another machine (scores recorded elsewhere): every kernel may differ, and the multi-step attacks
# (SecMI, PIA: ten DDIM steps and more) compound the differences step by step.
OTHER_MACHINE = 1e-4


def assert_scores_close(got: object, want: object, relative: float = SAME_MACHINE, err_msg: str = "") -> None:
    """Assert two score arrays agree to ``relative`` of the scores' scale (their largest magnitude).

    Relative to the scale, not to each score: a score that is a difference of two errors (SecMI,
    PIA, a calibrated score) may be near zero while the errors it was computed from are not.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{err_msg}: shapes {got.shape} and {want.shape}"
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=relative, atol=relative * scale, err_msg=err_msg)
