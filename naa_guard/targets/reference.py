"""A reference model's compatibility with the model under audit, checked from configs before any scoring.

Calibrated scores (SPEC section 2, "Reference calibration") subtract the reference's score from
the target's on the same seeded noise. That difference means "what the target memorised" only
when both models denoise the same space on the same schedule: same family (pixel or latent), same
UNet architecture, same image geometry, same latent space (VAE config) and the same
``alphas_cumprod``. Anything else is refused here, before a model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import TargetError
from naa_guard.targets.base import read_json, scheduler_class
from naa_guard.targets.flow_info import FlowModelInfo
from naa_guard.targets.latent_info import LatentModelInfo

if TYPE_CHECKING:
    from naa_guard.targets.detect import AnyModelInfo

# Config keys that record where or with what a model was saved, not what it computes.
PROVENANCE_KEYS = frozenset({"_diffusers_version", "_name_or_path", "_use_default_values"})
# Relative tolerance on alphas_cumprod: the same schedule rebuilt by another scheduler class agrees to float32 rounding.
SCHEDULE_RTOL = 1e-5


def config_differences(target: dict[str, Any], reference: dict[str, Any]) -> list[str]:
    """Return 'key: target vs reference' for every key both configs set to different values."""
    shared = sorted((set(target) & set(reference)) - PROVENANCE_KEYS)
    return [f"{key}: {target[key]!r} vs {reference[key]!r}" for key in shared if target[key] != reference[key]]


def scheduler_dir(info: AnyModelInfo) -> Path:
    """Return the folder of a model's scheduler config."""
    return info.components["scheduler"] if isinstance(info, LatentModelInfo) else info.scheduler_dir


def alphas_cumprod(folder: Path) -> Any:
    """Return the float64 numpy ``alphas_cumprod`` the scheduler config in ``folder`` builds."""
    import numpy as np

    config = read_json(folder / "scheduler_config.json")
    scheduler = scheduler_class(folder, config).from_config(config)
    schedule = getattr(scheduler, "alphas_cumprod", None)
    if schedule is None:
        raise TargetError(f"{folder}: scheduler {type(scheduler).__name__} has no alphas_cumprod schedule.")
    return np.asarray(schedule, dtype=np.float64)


def check_reference(target: AnyModelInfo, reference: AnyModelInfo) -> None:
    """Return None; raise TargetError when ``reference`` cannot calibrate ``target``'s scores."""
    import numpy as np

    fix = "Point model.reference at the model this one was fine-tuned from (same architecture, VAE and scheduler), or remove it."
    where = f"model.reference {reference.root} against model {target.root}"
    if isinstance(target, LatentModelInfo) != isinstance(reference, LatentModelInfo):
        kinds = {True: "a latent pipeline", False: "a pixel-space model"}
        raise TargetError(f"{where}: the reference is {kinds[isinstance(reference, LatentModelInfo)]}, the model {kinds[isinstance(target, LatentModelInfo)]}; scores of different diffusion spaces cannot be subtracted. {fix}")
    families = [getattr(info, "family", "ddpm") for info in (target, reference)]
    if families[0] != families[1]:
        raise TargetError(f"{where}: the reference is a {families[1]} model, the model a {families[0]} one (another parametrization or another denoiser's input: flow matching v DDPM noise prediction, PixArt's T5-conditioned DiT v a UNet); their scores cannot be subtracted. {fix}")
    problems = [f"UNet config {diff}" for diff in config_differences(target.unet_config, reference.unet_config)]
    if (target.sample_size, target.in_channels) != (reference.sample_size, reference.in_channels):
        problems.append(f"image geometry {target.sample_size}px x {target.in_channels} channels vs {reference.sample_size}px x {reference.in_channels}")
    if isinstance(target, LatentModelInfo) and isinstance(reference, LatentModelInfo):
        problems += [f"VAE config (latent space) {diff}" for diff in config_differences(target.vae_config, reference.vae_config)]
        encoders = [sorted(name for name in info.components if name.startswith("text_encoder")) for info in (target, reference)]
        if encoders[0] != encoders[1]:
            problems.append(f"text encoders: {', '.join(encoders[0])} vs {', '.join(encoders[1])}")
        elif target.sdxl != reference.sdxl:
            problems.append(f"text encoders: {'two (SDXL)' if target.sdxl else 'one'} vs {'two (SDXL)' if reference.sdxl else 'one'}")
    if problems:
        raise TargetError(f"{where}: the models differ (target vs reference): {'; '.join(problems[:6])}. {fix}")
    if isinstance(target, FlowModelInfo):
        return  # a flow family's schedule is fixed by its parametrization (s = t / 1000), not by its scheduler config
    mine, theirs = alphas_cumprod(scheduler_dir(target)), alphas_cumprod(scheduler_dir(reference))
    if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=SCHEDULE_RTOL, atol=0.0):
        raise TargetError(
            f"{where}: the noise schedules differ ({len(mine)} vs {len(theirs)} timesteps; alphas_cumprod of "
            f"{scheduler_dir(target)} vs {scheduler_dir(reference)}), so the same timestep is not the same noise level. {fix}"
        )
