"""A machine without a GPU re-gates from a chunk store that a GPU machine scored (``--device cuda``).

The store keys chunks by device type. Scoring on a GPU is simulated by keying the CPU's scores
under ``cuda``; the re-gate on this CPU names ``cuda`` and must read them without loading the model,
and fail (never score on the CPU under the GPU's key) when a chunk is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_setup

from naa_guard.audit import audit
from naa_guard.errors import EnvironmentUnavailableError
from naa_guard.policy import load_policy
from naa_guard.scoring import scorer as scorer_module
from naa_guard.scoring.chunks import ChunkStore

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_cpu_machine_regates_from_chunks_scored_on_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    policy = load_policy(make_tiny_setup(tmp_path, thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}"))
    store = ChunkStore(tmp_path / "store")
    with monkeypatch.context() as patch:  # "the GPU machine": its chunks are keyed under cuda
        patch.setattr(scorer_module.Scorer, "_device", lambda self: "cuda")
        scored = audit(policy, progress=False, chunk_store=store)
    regate = audit(policy, device="cuda", progress=False, chunk_store=store)
    assert regate.attacks["naa"].cached and not scored.attacks["naa"].cached
    assert np.array_equal(regate.attacks["naa"].member_scores, scored.attacks["naa"].member_scores)
    assert regate.passed == scored.passed
    with pytest.raises(EnvironmentUnavailableError, match="no CUDA device"):  # a chunk missing: the model would have to load here
        audit(policy, device="cuda", progress=False, chunk_store=ChunkStore(tmp_path / "empty"))
