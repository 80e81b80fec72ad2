"""What an audit measured, as fingerprints a later audit can be compared with, and where it ran.

A regression gate (:mod:`naa_guard.verdict.baseline`) may only compare two audits of the same question:
the same model layout (architecture and noise schedule; the weights are what changed), the same
member and non-member samples, the same attack settings, the same inputs to the attacks (the
conditioning, prompt, captions and ``data.fit``: each changes every score). Each is recorded in ``report.json``
twice: a sha256 digest to compare, and a short readable summary to say what differs.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.attacks.candidates import AttackCandidates
from naa_guard.samples import files_digest
from naa_guard.version import __version__

if TYPE_CHECKING:
    from naa_guard.policy import Policy
    from naa_guard.samples import SampleSet
    from naa_guard.targets import AnyModelInfo


def digest(material: Any) -> str:
    """Return the sha256 hex digest of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _public(config: dict[str, Any]) -> dict[str, Any]:
    # diffusers writes "_diffusers_version", "_name_or_path" etc.: bookkeeping, not layout.
    return {key: value for key, value in config.items() if not key.startswith("_")} | {"class": config.get("_class_name")}


def model_layout(policy: Policy, info: AnyModelInfo | None) -> dict[str, Any]:
    """Return the model's layout (UNet and scheduler configs, not weights) with its digest."""
    if info is None:
        material: dict[str, Any] = {"loader": policy.model.loader}
        summary = f"custom loader {policy.model.loader}"
    else:
        unet_dir = getattr(info, "unet_dir", None) or info.components["unet"]
        scheduler_dir = getattr(info, "scheduler_dir", None) or info.components["scheduler"]
        scheduler = json.loads((scheduler_dir / "scheduler_config.json").read_text(encoding="utf-8"))
        material = {"unet": _public(info.unet_config), "scheduler": _public(scheduler), "unet_subfolder": unet_dir.name}
        vae_config = getattr(info, "vae_config", None)
        if vae_config is not None:  # a latent pipeline: the VAE decides the space the attacks run in
            material["vae"] = _public(vae_config)
            material["lora"] = None if info.lora is None else {"scale": info.lora_scale}
        summary = (
            f"{info.unet_config.get('_class_name', 'UNet')} {info.in_channels}x{info.sample_size}x{info.sample_size} "
            f"(from {unet_dir.name}/), scheduler {scheduler.get('_class_name', '?')} "
            f"{scheduler.get('prediction_type', 'epsilon')}, {scheduler.get('num_train_timesteps', '?')} steps"
        )
        if getattr(info, "family", None) is not None:  # a flow family (SPEC 3b): the attacks' timestep t is s = t / 1000
            material["parametrization"] = info.identity_material()["parametrization"]
            summary = f"{summary.split(', scheduler')[0]}, {material['parametrization']}"
    # The material itself too, so that a baseline of another layout names the key that differs.
    layout = {"digest": digest(material), "summary": summary, **material}
    # Where the weights come from (a precision variant's files, a single file's components): said, not part of the
    # layout's digest (the weights are what a baseline comparison lets change); the score cache key covers the files.
    if getattr(info, "variant", None) is not None:
        layout["variant"] = info.variant  # type: ignore[union-attr]
    if callable(getattr(info, "weight_sources", None)):
        layout["weights"] = info.weight_sources()  # type: ignore[union-attr]
    return layout


def sample_set(samples: SampleSet) -> dict[str, Any]:
    """Return a sample set's fingerprint: the digest of its files and of the samples chosen."""
    chosen = hashlib.sha256(samples.indices.tobytes()).hexdigest()
    return {"digest": digest([files_digest(samples.files), chosen]), "count": len(samples), "source": str(samples.source)}


def attack_settings(policy: Policy) -> dict[str, Any]:
    """Return every setting that changes what an attack scores: its parameters (or candidates), seed, dtype, ..."""
    attacks: dict[str, Any] = {}
    for name, params in policy.attacks.items():
        if isinstance(params, AttackCandidates):
            attacks[name] = {"candidates": [c.model_dump() for c in params.candidates], "tune_fraction": policy.tune.fraction}
        else:
            attacks[name] = params.model_dump()
    runtime, thresholds = policy.runtime, policy.thresholds
    return {"attacks": attacks, "seed": runtime.seed, "dtype": runtime.dtype, "confidence": thresholds.confidence}


def attack_inputs(policy: Policy, members: SampleSet, nonmembers: SampleSet, conditioning: str | None) -> dict[str, Any]:
    """Return what the attacks were fed beyond the pixels: conditioning, prompt, the captions' digest and data.fit."""
    inputs = {
        "conditioning": conditioning, "prompt": policy.data.prompt, "fit": policy.data.fit,
        "captions": digest([list(members.captions), list(nonmembers.captions)]),
    }  # fmt: skip
    return {"digest": digest(inputs), **inputs}


def audit_fingerprint(policy: Policy, info: AnyModelInfo | None, members: SampleSet, nonmembers: SampleSet, conditioning: str | None = None) -> dict[str, Any]:
    """Return the fingerprints a baseline must share: model layout, sample sets, attack settings and inputs."""
    settings = attack_settings(policy)
    return {
        "model_layout": model_layout(policy, info),
        "members": sample_set(members),
        "nonmembers": sample_set(nonmembers),
        "attack_settings": {"digest": digest(settings), **settings},
        "inputs": attack_inputs(policy, members, nonmembers, conditioning),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(policy_path: str | None, device: str | None, dtype: str, seed: int) -> dict[str, Any]:
    """Return where and how the audit ran: versions, device, dtype, seed and the policy file's sha256."""
    policy_hash = None
    if policy_path is not None and Path(policy_path).is_file():
        policy_hash = hashlib.sha256(Path(policy_path).read_bytes()).hexdigest()
    return {
        "naa_guard": __version__, "torch": _version("torch"), "diffusers": _version("diffusers"),
        "python": platform.python_version(), "platform": platform.platform(),
        "device": device or "not loaded (cached scores)", "dtype": dtype, "seed": seed, "policy_sha256": policy_hash,
    }  # fmt: skip
