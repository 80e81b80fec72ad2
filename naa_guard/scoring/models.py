"""The model under audit, loaded at most once and only when a chunk needs it: an unchanged model
whose scores are all stored re-gates without loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from naa_guard.samples.digests import expect_file_lists
from naa_guard.targets import AnyModelInfo, Target, as_target, load_target, probe_target, read_model_info, resolve_device
from naa_guard.targets.custom import load_custom_target
from naa_guard.targets.precision import check_dtype_supported

if TYPE_CHECKING:
    from naa_guard.policy import Policy


def load_model(policy: Policy, info: AnyModelInfo | None, timings: dict[str, float] | None = None) -> Target:
    """Return the policy's model (diffusers folder or custom loader), probed with one test image (one query).

    ``timings`` (when given) receives the seconds of ``load`` and ``probe``.

    A half ``runtime.dtype`` is first checked to run on the device (``targets/precision.py``).
    With ``runtime.compile: true`` the UNet (a target's ``unet`` attribute) goes through
    ``torch.compile``; a target without one runs as it is.
    """
    import time

    import torch

    started = time.perf_counter()
    runtime = policy.runtime
    device = resolve_device(runtime.device)
    check_dtype_supported(device, runtime.dtype)  # a half dtype this torch cannot run here: said before anything loads
    if info is None:
        loader = str(policy.model.loader)
        target = load_custom_target(loader, policy.model.path, device=device, dtype=getattr(torch, runtime.dtype))
        where = f"model.loader {loader!r}"
    else:
        target = load_target(info, allow_pickle=policy.model.allow_pickle, device=runtime.device, dtype=runtime.dtype)
        where = str(info.unet_dir)
    loaded = time.perf_counter() - started
    probe = probe_target(target, where)
    if timings is not None:
        timings.update(load=loaded, probe=probe)
    if runtime.compile and hasattr(target, "unet"):
        target.unet = torch.compile(target.unet)
    return target


class ModelSource:
    """Loads the policy's model on first use and keeps it (one per process)."""

    def __init__(self, policy: Policy, info: AnyModelInfo | None, target: Target | None = None) -> None:
        self.policy, self.info, self._target = policy, info, as_target(target) if target is not None else None
        self.loaded = False  # whether this process loaded the model (not handed a target)
        self.timings: dict[str, float] = {}  # seconds of loading and of the probe, once loaded here

    @property
    def ready(self) -> Target | None:
        """Return the target if it is loaded, else None."""
        return self._target

    def target(self) -> Target:
        """Return the target, loading (and probing) the policy's model on first use."""
        if self._target is None:
            from naa_guard.scoring.modelguard import check_model_may_load

            check_model_may_load(self.policy.name)  # never in a --nproc launcher: the ranks load it
            self._target, self.loaded = load_model(self.policy, self.info, self.timings), True
        return self._target


def model_source(policy: Policy, target: Target | None = None, *, key: str = "model.path") -> ModelSource:
    """Return a model source for ``policy`` (its folder read, nothing loaded; ``target`` stands in for the model).

    ``key`` is the policy key that named ``policy.model.path`` (model.reference for a reference's policy), for messages.
    """
    model = policy.model
    if model.single_file is not None:  # one checkpoint file, configured by model.config
        from naa_guard.targets.detect import read_single_file_info

        info: AnyModelInfo | None = read_single_file_info(model.single_file, model.config, model.unet_subfolder, variant=model.variant)
    else:
        info = read_model_info(model.path, model.unet_subfolder, lora=model.lora, lora_scale=model.lora_scale, key=key, variant=model.variant) if model.loader is None else None
    if info is not None:  # model.max_sequence_length / model.guidance: checked against the configs, before any model loads
        from naa_guard.targets.flow_info import with_text_settings

        info = with_text_settings(info, max_sequence_length=model.max_sequence_length, guidance=model.guidance, where=str(policy.source or policy.name))
    if info is not None and callable(getattr(info, "encoder_files", None)):  # the scores' key and the encodings' key: one read of the files
        expect_file_lists(info.identity_files(), info.encoder_files())  # type: ignore[union-attr]
    return ModelSource(policy, info, target)
