"""Reference calibration: every attack scored on the model and on a reference, and their difference.

With ``model.reference`` (SPEC section 2, "Reference calibration") each attack's scores are
computed twice with the same seeded noise (the noise comes from each sample's key and the seed,
never from the model), once on the model under audit and once on the reference; the calibrated
score is ``score_target - score_reference``. The reference is a second :class:`ModelSource` with
its own :class:`Scorer`: its scores are cached and stored under the reference's own model
identity, so changing the reference changes the key of every calibrated score. The target is
scored for all its chunks first, then the reference (one model busy at a time; both stay loaded
for the next attack).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from naa_guard.errors import PolicyError
from naa_guard.scoring.models import ModelSource, model_source
from naa_guard.targets.reference import check_reference
from naa_guard.policy.resultnames import CALIBRATED_SUFFIX, calibrated_name

if TYPE_CHECKING:
    from naa_guard.attacks import Attack
    from naa_guard.policy import Policy
    from naa_guard.samples import SampleSet
    from naa_guard.scoring.scorer import Scorer

__all__ = ["CALIBRATED_SUFFIX", "CalibratedScorer", "calibrate", "calibrated_name", "reference_policy", "reference_source"]


def reference_policy(policy: Policy) -> Policy | None:
    """Return the policy whose model is ``policy``'s reference (None: the policy has no reference)."""
    model = policy.model
    if model.reference is None:
        return None
    if model.reference == "base":  # the LoRA's base pipeline: the same folder without the adapter
        update = {"lora": None, "lora_scale": 1.0, "reference": None}
    else:
        update = {"path": model.reference, "unet_subfolder": None, "lora": None, "lora_scale": 1.0, "single_file": None, "config": None, "reference": None}
    return policy.model_copy(update={"model": model.model_copy(update=update)})


def reference_source(policy: Policy, models: ModelSource) -> ModelSource | None:
    """Return the reference's model source, checked against the model's configs (None: no reference).

    Raises TargetError, before any model loads, when the reference is of another family,
    architecture, latent space or noise schedule.
    """
    ref_policy = reference_policy(policy)
    if ref_policy is None:
        return None
    source = model_source(ref_policy, key="model.reference" if policy.model.reference != "base" else "model.path")
    if models.info is None or source.info is None:  # excluded by the schema; kept so a custom loader can never slip through
        raise PolicyError(f"{policy.source or 'the policy'}: model.reference needs a diffusers model (model.path or model.single_file), not a model.loader; remove model.reference")
    check_reference(models.info, source.info)
    return source


class CalibratedScorer:
    """The tuning's score function with a reference: calibrated scores (target minus reference)."""

    def __init__(self, target: Scorer, reference: Scorer) -> None:
        self.target, self.reference = target, reference

    def __call__(self, attack: Attack, members: SampleSet, nonmembers: SampleSet, label: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Return (member scores, non-member scores, whether both were cached), calibrated."""
        target_m, target_n, target_cached = self.target(attack, members, nonmembers, label)
        ref_m, ref_n, ref_cached = self.reference(attack, members, nonmembers, f"{label} (reference)")
        return target_m - ref_m, target_n - ref_n, target_cached and ref_cached


def calibrate(target: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return each role's calibrated scores: the target's minus the reference's, sample by sample."""
    return {role: np.asarray(scores, dtype=np.float64) - np.asarray(reference[role], dtype=np.float64) for role, scores in target.items()}
