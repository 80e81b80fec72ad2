"""Model checks: a model folder's configs and weights are validated before anything trusts them.

Nothing a checkpoint says is taken on faith, because a wrong config or a partly loaded model
scores images the model never learned in that form and so hides leakage (a false PASS):

- every JSON config must be a JSON object (:func:`read_json_object`);
- each config value must have the type the component's constructor declares
  (:func:`check_config_types`; generic over diffusers models and schedulers: a UNet2DModel, a
  UNet2DConditionModel, a VAE), and sizes must be positive (:func:`check_unet_config`);
- a scheduler's betas must lie in (0, 1) and the resulting ``alphas_cumprod`` in (0, 1], finite
  and strictly decreasing (:func:`check_scheduler_config`, :func:`check_alphas_cumprod`);
- ``model_index.json`` may only name classes that exist (:func:`check_model_index`,
  :func:`check_model_index_classes`);
- weights load strictly: every tensor the module has must be in the files and every tensor in
  the files must belong to the module, with the same shape (:func:`check_weights_match`); a
  safetensors file that cannot be parsed is named (:func:`read_safetensors_header`).

Only :func:`check_config_types`, :func:`check_model_index_classes` and
:func:`check_weights_match` import diffusers / torch (lazily); the rest is plain Python, so
folder and config errors are reported before any heavy import.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from naa_guard.errors import TargetError
from naa_guard.userfiles import open_regular

__all__ = [
    "check_alphas_cumprod",
    "check_config_types",
    "check_model_index",
    "check_model_index_classes",
    "check_scheduler_config",
    "check_unet_config",
    "check_weights_match",
    "read_json_object",
    "read_safetensors_header",
    "weight_shapes",
]

RESAVE = "Re-save the component with save_pretrained, or fix the value by hand"
# model_index.json entries name classes from these libraries; anything else needs model.loader.
KNOWN_LIBRARIES = ("diffusers", "transformers")
# Positive integer keys of diffusers image models (when present in the config).
POSITIVE_INT_KEYS = ("in_channels", "out_channels", "layers_per_block", "norm_num_groups", "num_train_timesteps", "latent_channels")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
_HEADER_LIMIT = 100_000_000  # safetensors' own cap on the JSON header


def read_json_object(path: Path) -> dict[str, Any]:
    """Return the JSON object stored in ``path``; a missing, unreadable or non-object file is an error."""
    try:
        with open_regular(path, TargetError, "the JSON config", f"{RESAVE}.") as handle:  # a pipe or device: refused, never opened
            value = json.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TargetError(f"{path}: cannot read this JSON config ({exc}). {RESAVE}.") from None
    if not isinstance(value, dict):
        raise TargetError(
            f"{path}: expected a JSON object (a mapping of keys to values), found a JSON "
            f"{_json_kind(value)}. {RESAVE}."
        )
    return value


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null" if value is None else type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def check_unet_config(config: dict[str, Any], file: Path) -> tuple[int, int]:
    """Return (sample_size, in_channels) of an image model config after checking its sizes.

    ``sample_size`` must be a positive int (or a square pair of them), ``block_out_channels`` a
    non-empty list of positive ints, and the keys of :data:`POSITIVE_INT_KEYS` positive ints.
    """
    sample_size = config.get("sample_size")
    if isinstance(sample_size, list) and len(sample_size) == 2 and all(_is_int(s) for s in sample_size):
        if sample_size[0] != sample_size[1]:
            raise TargetError(f"{file}: non-square sample_size {sample_size} is not supported; only square images.")
        sample_size = sample_size[0]
    if not _is_int(sample_size) or sample_size < 1:
        raise TargetError(
            f"{file}: sample_size is {sample_size!r}; expected a positive int so images can be "
            f"checked against the model's input. Set it in the UNet config."
        )
    for key in POSITIVE_INT_KEYS:
        if config.get(key) is not None and not (_is_int(config[key]) and config[key] >= 1):
            raise TargetError(f"{file}: {key} is {config[key]!r}; expected a positive int. {RESAVE}.")
    channels = config.get("block_out_channels")
    if channels is not None and not (isinstance(channels, list) and channels and all(_is_int(c) and c >= 1 for c in channels)):
        raise TargetError(f"{file}: block_out_channels is {channels!r}; expected a non-empty list of positive ints. {RESAVE}.")
    for key in ("down_block_types", "up_block_types"):
        blocks = config.get(key)
        if blocks is not None and channels is not None and (not isinstance(blocks, list) or len(blocks) != len(channels)):
            raise TargetError(
                f"{file}: {key} is {blocks!r}; expected a list with one block name per entry of "
                f"block_out_channels ({len(channels)}). {RESAVE}."
            )
    return sample_size, config.get("in_channels")  # type: ignore[return-value]  # in_channels is checked by the caller


def check_scheduler_config(config: dict[str, Any], file: Path) -> None:
    """Return None; raise TargetError if the noise schedule the config describes is impossible.

    Betas are noise variances per step: each must lie in (0, 1), or ``alphas_cumprod`` reaches 0
    or below and every attack's arithmetic breaks without an error.
    """
    steps = config.get("num_train_timesteps", 1000)
    if not _is_int(steps) or steps < 2:
        raise TargetError(f"{file}: num_train_timesteps is {steps!r}; expected an int of at least 2. {RESAVE}.")
    for key in ("beta_start", "beta_end"):
        if key in config and not (_is_number(config[key]) and 0.0 < config[key] < 1.0):
            raise TargetError(
                f"{file}: {key} is {config[key]!r}; expected a number in (0, 1) (a noise variance per step). {RESAVE}."
            )
    if _is_number(config.get("beta_start")) and _is_number(config.get("beta_end")) and config["beta_start"] > config["beta_end"]:
        raise TargetError(f"{file}: beta_start {config['beta_start']} is above beta_end {config['beta_end']}; the noise must grow with t. {RESAVE}.")
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is None and schedule not in BETA_SCHEDULES:
        raise TargetError(f"{file}: beta_schedule is {schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}. {RESAVE}.")
    betas = config.get("trained_betas")
    if betas is not None:
        if not (isinstance(betas, list) and len(betas) >= 2 and all(_is_number(b) and 0.0 < b < 1.0 for b in betas)):
            shown = betas if not isinstance(betas, list) else [b for b in betas if not (_is_number(b) and 0.0 < b < 1.0)][:3]
            raise TargetError(f"{file}: trained_betas must be a list of at least 2 numbers in (0, 1); found {shown!r}. {RESAVE}.")


def check_alphas_cumprod(alphas: Sequence[float] | Any, where: str) -> None:
    """Return None; raise TargetError unless ``alphas_cumprod`` is finite, in (0, 1] and strictly decreasing."""
    import numpy as np

    values = np.asarray(alphas, dtype=np.float64).ravel()
    problem = None
    if values.size < 2:
        problem = f"has {values.size} timestep(s); expected at least 2"
    elif not np.isfinite(values).all():
        problem = "contains NaN or infinite values"
    elif not ((values > 0) & (values <= 1)).all():
        bad = int(np.flatnonzero((values <= 0) | (values > 1))[0])
        problem = f"leaves (0, 1] (alphas_cumprod[{bad}] = {values[bad]:.4g})"
    elif not (np.diff(values) < 0).all():
        bad = int(np.flatnonzero(np.diff(values) >= 0)[0])
        problem = f"is not strictly decreasing (step {bad} -> {bad + 1}: {values[bad]:.6g} -> {values[bad + 1]:.6g})"
    if problem is not None:
        raise TargetError(
            f"{where}: the noise schedule's alphas_cumprod {problem}; expected values in (0, 1], "
            f"strictly decreasing with t (every beta in (0, 1)). Fix the scheduler config's betas."
        )


def check_config_types(config: dict[str, Any], component: type, file: Path) -> None:
    """Return None; raise TargetError naming every config value whose type the constructor refuses.

    Each key that ``component.__init__`` declares is validated against its annotation, strictly
    (no bool for a number, no "32" for 32), so this works for any diffusers model or scheduler.
    """
    import inspect
    import typing

    from pydantic import TypeAdapter, ValidationError

    try:
        hints = typing.get_type_hints(component.__init__)
    except Exception:  # an annotation that does not resolve: nothing to check against
        return
    problems = []
    for key, value in config.items():
        if key.startswith("_") or key not in hints or key not in inspect.signature(component.__init__).parameters:
            continue
        try:
            adapter = TypeAdapter(hints[key])
        except Exception:  # an annotation pydantic cannot express (e.g. numpy arrays): checked elsewhere
            continue
        try:
            adapter.validate_json(json.dumps(value), strict=True)
        except (ValidationError, TypeError, ValueError) as exc:
            expected = getattr(hints[key], "__name__", None) or str(hints[key]).replace("typing.", "")
            reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            problems.append(f"{key} is {value!r}; expected {expected} ({reason})")
    if problems:
        raise TargetError(f"{file}: {len(problems)} config value(s) of the wrong type for {component.__name__}: {'; '.join(problems)}. {RESAVE}.")


def check_model_index(index: dict[str, Any], file: Path) -> dict[str, tuple[str, str]]:
    """Return the components ``model_index.json`` names (name -> (library, class)) after checking its form.

    Entries are ``"name": ["library", "ClassName"]``; ``[null, null]`` marks an absent optional
    component; keys starting with ``_`` are metadata, and booleans / numbers are pipeline settings
    (e.g. ``requires_safety_checker``).
    """
    components: dict[str, tuple[str, str]] = {}
    for name, entry in index.items():
        if name.startswith("_"):
            continue
        if isinstance(entry, list) and len(entry) == 2 and entry[0] is None and entry[1] is None:
            continue
        if entry is None or isinstance(entry, (bool, int, float)):
            continue  # a pipeline setting (requires_safety_checker, force_zeros_for_empty_prompt, ...), not a component
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) and part for part in entry)):
            raise TargetError(
                f"{file}: component {name!r} is {entry!r}; expected [\"library\", \"ClassName\"] "
                f"(e.g. [\"diffusers\", \"UNet2DModel\"]) or [null, null]. Re-save the pipeline with save_pretrained."
            )
        components[name] = (entry[0], entry[1])
    return components


def check_model_index_classes(components: dict[str, tuple[str, str]], file: Path, declared: dict[str, Any] | None = None) -> None:
    """Return None; raise TargetError if a component names a library or class that does not exist.

    ``declared`` maps component names to the ``_class_name`` their own config gives; the index
    must agree with it (an index saying UNet2DConditionModel over a UNet2DModel config is a
    folder assembled from different models).
    """
    import importlib

    for name, (library, class_name) in components.items():
        if library not in KNOWN_LIBRARIES:
            raise TargetError(
                f"{file}: component {name!r} names the library {library!r}; a model folder may only use "
                f"{' or '.join(KNOWN_LIBRARIES)} classes. Custom code runs only through model.loader."
            )
        try:
            module = importlib.import_module(library)
        except ImportError:
            raise TargetError(f"{file}: component {name!r} needs the library {library!r}, which is not installed. Install it.") from None
        if not isinstance(getattr(module, class_name, None), type):
            raise TargetError(
                f"{file}: component {name!r} names the class {library}.{class_name}, which does not exist "
                f"(in {library} {getattr(module, '__version__', '?')}). Fix the class name, or re-save the pipeline with save_pretrained."
            )
    for name, own in (declared or {}).items():
        if name in components and own is not None and components[name][1] != own:
            raise TargetError(
                f"{file}: component {name!r} is {components[name][1]} here, but {name}/'s own config says {own!r}. "
                f"The folder mixes parts of different models; re-save the pipeline with save_pretrained."
            )


def read_safetensors_header(file: Path) -> dict[str, tuple[int, ...]]:
    """Return tensor name -> shape from a safetensors file, after checking that its layout is whole.

    The file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape,
    data_offsets) and the tensor bytes; a truncated or garbled file is a TargetError naming it.
    """
    def corrupt(why: str) -> TargetError:
        return TargetError(
            f"{file}: this safetensors weight file is corrupt ({why}). Restore it from the original "
            f"checkpoint or re-save the model with save_pretrained(..., safe_serialization=True)."
        )

    try:
        size = file.stat().st_size
        with open_regular(file, TargetError, "the weight file", "Point the policy at the weight file itself.") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise corrupt(f"{size} bytes, too short for a header")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_HEADER_LIMIT, size - 8):
                raise corrupt(f"its header claims {length} bytes, the file has {size}")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as exc:
        raise TargetError(f"{file}: cannot read this weight file ({exc.strerror or exc}). Check that it exists and is readable.") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise corrupt(f"its header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets) and 0 <= offsets[0] <= offsets[1]
                and isinstance(shape, list) and all(_is_int(s) and s >= 0 for s in shape)):  # fmt: skip
            raise corrupt(f"tensor {name!r} has a malformed entry {entry!r}")
        shapes[name] = tuple(shape)
        end = max(end, offsets[1])
    if 8 + length + end != size:
        raise corrupt(f"the header describes {8 + length + end} bytes, the file has {size}: truncated or padded")
    return shapes


def weight_shapes(files: Iterable[Path]) -> dict[str, tuple[int, ...]]:
    """Return tensor name -> shape over weight files (headers only for safetensors); a corrupt file is named."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        shapes.update(_file_shapes(Path(file)))
    return shapes


def pickle_load_error(file: Path | str, exc: BaseException, where: str = "") -> TargetError:
    """Return naa-guard's error for a pickle that ``torch.load(weights_only=True)`` refused or could not read.

    torch's own message advises re-running with ``weights_only=False`` ("will likely succeed"),
    which would execute whatever the pickle holds: it is never passed on. A pickle holding objects
    other than tensors is refused even under ``model.allow_pickle: true``; the fix is a
    safetensors copy made where the file is trusted.
    """
    text = str(exc)
    if "weights_only" not in text and "WeightsUnpickler" not in text:
        return TargetError(f"{where}{file}: cannot read this weight file ({type(exc).__name__}: {text.strip()}). Restore or re-save it.")
    objects = sorted(set(re.findall(r"GLOBAL ([\w.]+)", text))) or ["objects other than tensors"]
    return TargetError(
        f"{where}{file}: this pickle holds {', '.join(objects)} besides tensors; naa-guard loads only tensors from a pickle, "
        f"even with model.allow_pickle: true, because unpickling anything else can run code. Fix: convert it to "
        f"safetensors on a machine where you trust the file (load it, keep the tensors, and save them with "
        f"safetensors.torch.save_file, or save_pretrained(..., safe_serialization=True)), and point the policy at the copy."
    )


def _file_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    if file.suffix == ".safetensors":
        return read_safetensors_header(file)
    import torch

    try:
        state = torch.load(file, map_location="meta", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged pickle
        raise pickle_load_error(file, exc) from None
    if not isinstance(state, dict):
        raise TargetError(f"{file}: expected a state dict (tensor name -> tensor), found {type(state).__name__}. Re-save it.")
    return {str(name): tuple(tensor.shape) for name, tensor in state.items() if hasattr(tensor, "shape")}


def shape_differences(module: Any, stored: dict[str, tuple[int, ...]], *, ignore_suffix: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """Return the tensor names missing from ``stored``, unexpected in it, and stored with another shape than ``module``'s.

    Names ending in ``ignore_suffix`` count on neither side (e.g. ``position_ids`` buffers some versions save).
    """
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    if ignore_suffix is not None:
        expected = {name: shape for name, shape in expected.items() if not name.endswith(ignore_suffix)}
        stored = {name: shape for name, shape in stored.items() if not name.endswith(ignore_suffix)}
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    return missing, unexpected, sorted(name for name in set(expected) & set(stored) if expected[name] != tuple(stored[name]))


def check_weights_match(module: Any, files: Iterable[Path], where: str | Path) -> None:
    """Return None; raise TargetError unless the files hold exactly the module's tensors, with its shapes.

    A tensor the files lack would stay at its random initial value (diffusers only warns); a
    tensor the module lacks means the config describes a different network than the weights.
    """
    files = list(files)
    stored = weight_shapes(files)
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    missing, unexpected, reshaped = shape_differences(module, stored)
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the weights: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) the {type(module).__name__} does not have: {_names(unexpected)}")
    if reshaped:
        problems.append("shape mismatch: " + ", ".join(f"{n} {stored[n]} in the file vs {expected[n]} in the model" for n in reshaped[:5]))
    if problems:
        names = ", ".join(f.name for f in files)
        raise TargetError(
            f"{where}: the weights ({names}) do not match the network its config describes: {'; '.join(problems)}. "
            f"naa-guard loads weights strictly (a missing tensor would stay random). Check that config.json belongs "
            f"to these weights, or re-save the model with save_pretrained."
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
