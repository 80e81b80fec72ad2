"""Targets: the model under audit, as the attacks see it (one module per model family).

- :mod:`~naa_guard.targets.base`: the :class:`Target` protocol, device resolution, offline
  loading, the geometry probe;
- :mod:`~naa_guard.targets.detect`: which family a folder holds, and loading it;
- :mod:`~naa_guard.targets.pixel`: pixel-space ``UNet2DModel`` checkpoints;
- :mod:`~naa_guard.targets.latent`: Stable Diffusion and SDXL pipelines (VAE latents, text
  conditioning), with :mod:`~naa_guard.targets.lora` for LoRA adapters;
- :mod:`~naa_guard.targets.custom`: ``model.loader`` functions (the user's own code).
"""

from __future__ import annotations

from naa_guard.targets.base import OFFLINE_VARIABLES, PAD_MULTIPLE, PICKLE_SUFFIXES, SAFE_WEIGHTS, Target, as_target, offline_environment, probe_target, resolve_device
from naa_guard.targets.detect import AnyModelInfo, load_target, read_model_info
from naa_guard.targets.latent import LatentTarget
from naa_guard.targets.latent_info import LatentModelInfo
from naa_guard.targets.pixel import PREDICTION_TYPES, DiffusersTarget, ModelInfo

__all__ = [
    "OFFLINE_VARIABLES",
    "PAD_MULTIPLE",
    "PICKLE_SUFFIXES",
    "PREDICTION_TYPES",
    "SAFE_WEIGHTS",
    "AnyModelInfo",
    "DiffusersTarget",
    "LatentModelInfo",
    "LatentTarget",
    "ModelInfo",
    "Target",
    "as_target",
    "load_target",
    "offline_environment",
    "probe_target",
    "read_model_info",
    "resolve_device",
]
