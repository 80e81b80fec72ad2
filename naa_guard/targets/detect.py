"""Which model family a folder holds, read from its ``model_index.json`` or its subfolders.

:func:`read_model_info` looks at a folder without loading weights (so policies are checked and
images prepared before any model loads) and returns the family's info; :func:`load_target`
loads the model that info describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from naa_guard.errors import TargetError
from naa_guard.targets.base import read_json
from naa_guard.targets.pixel import ModelInfo, load_pixel_target, read_pixel_info

if TYPE_CHECKING:
    from naa_guard.targets.base import Target


def read_model_info(path: Path, unet_subfolder: str | None = None) -> ModelInfo:
    """Return the model folder's family, layout and image geometry, without importing torch."""
    root = Path(path)
    if not root.is_dir():
        raise TargetError(
            f"model folder {root} does not exist or is not a folder. Point model.path at a diffusers "
            f"folder (with model_index.json, or unet/ and scheduler/ subfolders), relative to the policy file."
        )
    index = root / "model_index.json"
    if index.is_file() and "vae" in read_json(index):
        raise TargetError(
            f"{root}: this is a latent diffusion pipeline (model_index.json lists a vae); naa-guard "
            f"audits pixel-space models (e.g. DDPMPipeline folders) only for now."
        )
    return read_pixel_info(root, unet_subfolder)


def load_target(info: ModelInfo, *, allow_pickle: bool, device: str, dtype: str) -> Target:
    """Return the loaded target for a model folder's info, offline, on the requested device and dtype."""
    return load_pixel_target(info, allow_pickle=allow_pickle, device=device, dtype=dtype)
