"""The model under audit, loaded at most once and only when a chunk needs it: an unchanged model
whose scores are all stored re-gates without loading.

An SD3 or Flux folder (without a LoRA) loads in two parts, never held together: its text encoders
and VAE (:meth:`ModelSource.encoder`), which encode every chunk the audit scores into the
encodings store, and then its transformer and VAE (:meth:`ModelSource.target`), which score the
stored encodings. Loading either part first releases the other part of every model source of this
process (the reference's too), so the peak memory is the larger part's, not their sum: T5-XXL
alone is 4.7B parameters, Flux's transformer 12B. The audit encodes every set it will score before
the first transformer loads (:func:`naa_guard.audit`), so the encoders load once; a chunk found
without its encodings later re-loads them, after the transformer is released (slower, same scores).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from naa_guard.samples.digests import expect_file_lists
from naa_guard.targets import AnyModelInfo, Target, as_target, load_target, probe_target, read_model_info, resolve_device
from naa_guard.targets.custom import load_custom_target
from naa_guard.targets.precision import check_dtype_supported

if TYPE_CHECKING:
    from naa_guard.policy import Policy


def load_model(policy: Policy, info: AnyModelInfo | None, timings: dict[str, float] | None = None, *, part: str = "all") -> Target:
    """Return the policy's model (diffusers folder or custom loader), probed with one test image (one query).

    ``timings`` (when given) receives the seconds of ``load`` and ``probe``. ``part`` (a flow
    folder only, see :func:`~naa_guard.targets.flowload.load_flow_target`): ``encoders`` is probed
    by encoding the test image, ``denoiser`` with a zero condition.

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
    elif part != "all":
        from naa_guard.targets.flowload import load_flow_target

        target = load_flow_target(info, allow_pickle=policy.model.allow_pickle, device=runtime.device, dtype=runtime.dtype, part=part)  # type: ignore[arg-type]
        where = str(info.unet_dir)
    else:
        target = load_target(info, allow_pickle=policy.model.allow_pickle, device=runtime.device, dtype=runtime.dtype)
        where = str(info.unet_dir)
    loaded = time.perf_counter() - started
    probe = probe_target(target, where, predict=part != "encoders")
    if timings is not None:
        names = ("load", "probe") if part == "all" else (f"load_{part}", f"probe_{part}")
        timings.update(zip(names, (loaded, probe)))
    if runtime.compile and getattr(target, "unet", None) is not None:
        target.unet = torch.compile(target.unet)
    return target


def loads_in_parts(info: AnyModelInfo | None) -> bool:
    """Return whether the model loads its text encoders and its denoiser apart: an SD3 or Flux folder without a LoRA.

    A LoRA is checked to reach the text encoders and the transformer together, so that pipeline
    loads whole (its peak is their sum); SD / SDXL load whole too: their CLIP encoders are
    small beside the UNet (SDXL: 0.8B parameters of 3.5B).
    """
    from naa_guard.targets.flow_info import FlowModelInfo
    from naa_guard.targets.flow_single_file import FlowSingleFileInfo

    # Sana and Flux 2 load whole through their own loaders; a single file's components come from the file
    return isinstance(info, FlowModelInfo) and info.family in ("sd3", "flux") and info.lora is None and not isinstance(info, FlowSingleFileInfo)


_SOURCES: weakref.WeakSet[ModelSource] = weakref.WeakSet()  # this process's model sources: one part loaded at a time across them


def free_memory() -> None:
    """Collect what was released, and hand the CUDA allocator's cached blocks back (the next part loads into them)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class ModelSource:
    """Loads the policy's model on first use and keeps it (one per process); a flow folder in two parts (see the module)."""

    def __init__(self, policy: Policy, info: AnyModelInfo | None, target: Target | None = None) -> None:
        self.policy, self.info, self._target = policy, info, as_target(target) if target is not None else None
        self.loaded = False  # whether this process loaded the model (not handed a target)
        self.timings: dict[str, float] = {}  # seconds of loading and of the probe, once loaded here
        self.in_parts = target is None and loads_in_parts(info)
        self._encoders: Target | None = None  # the text encoders and VAE, while they encode (in_parts only)
        self.encoder_loads = 0  # times the text encoders were loaded apart (more than once: a chunk was encoded late)
        _SOURCES.add(self)

    @property
    def ready(self) -> Target | None:
        """Return the target if it is loaded, else None."""
        return self._target

    def target(self) -> Target:
        """Return the target that scores, loading (and probing) the policy's model on first use.

        In parts: the transformer and VAE, after every source's text encoders are released.
        """
        if self._target is None:
            from naa_guard.scoring.modelguard import check_model_may_load

            check_model_may_load(self.policy.name)  # never in a --nproc launcher: the ranks load it
            if self.in_parts:
                release_all("encoders")
            self._target = load_model(self.policy, self.info, self.timings, part="denoiser" if self.in_parts else "all")
            self.loaded = True
        return self._target

    def encoder(self) -> Target:
        """Return the target that encodes images and captions (in parts: the text encoders and VAE, after every source's transformer is released)."""
        if not self.in_parts:
            return self.target()
        if self._encoders is None:
            from naa_guard.scoring.modelguard import check_model_may_load

            check_model_may_load(self.policy.name)
            release_all("denoiser")
            self._encoders = load_model(self.policy, self.info, self.timings, part="encoders")
            self.loaded, self.encoder_loads = True, self.encoder_loads + 1
        return self._encoders

    def release(self, part: str) -> bool:
        """Release the loaded ``encoders`` or ``denoiser`` part (in parts only); return whether one was held."""
        if not self.in_parts:
            return False
        held = self._encoders if part == "encoders" else self._target
        if part == "encoders":
            self._encoders = None
        else:
            self._target = None
        return held is not None


def release_all(part: str) -> None:
    """Release the ``encoders`` or ``denoiser`` part of every model source of this process that loads in parts."""
    if any([source.release(part) for source in list(_SOURCES)]):
        free_memory()


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
