"""Custom model loaders: the only way a policy runs code of its own.

``model.loader: "package.module:function"`` names a function that naa-guard imports (from the
installed packages and ``PYTHONPATH``, never from the data or model folders) and calls as
``function(path=model.path, device=torch.device, dtype=torch.dtype)``; ``path`` is ``None`` when
the policy gives none. It must return an object with the :class:`~naa_guard.targets.Target`
protocol: ``alphas_cumprod`` (1-D float32 tensor on the target's device), ``predict_noise(x, t)``
(epsilon prediction), ``sample_size`` and ``in_channels`` (the image geometry the data loader
prepares: square ``sample_size`` images with ``in_channels`` channels in [-1, 1]) and ``device``.
A model that works in another space or takes a condition also defines ``encode(images, captions)
-> (x0, cond)`` and ``predict_noise(x, t, cond)``; without ``encode`` the images are the
diffusion space and ``predict_noise(x, t)`` is called without a condition (the first protocol,
still accepted). A target whose ``encode`` reads the captions sets ``takes_text = True``; the
captions it gets then follow ``data.conditioning`` (otherwise every caption is None).

Nothing else in a policy can run code: diffusers folders load from safetensors (pickles only
with ``model.allow_pickle: true``) and schedulers only from diffusers' own classes. The loader
runs with the Hugging Face libraries forced offline; what it does beyond that is the user's code.

Score caching: the loader always runs (only the target knows the image geometry the data must
be prepared for), but cached scores skip the scoring. The cache key's model identity is the loader
string plus a digest of every file under ``model.path``; without a path, scores are not cached
(the loader's weights are unknown to naa-guard). Changing the loader's code without changing
those files keeps the old scores: clear the cache (``--naa-no-cache``) after such a change.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naa_guard.errors import NaaGuardError, TargetError
from naa_guard.samples import files_digest
from naa_guard.targets.base import as_target, offline_environment

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

    from naa_guard.targets.base import Target

TARGET_ATTRIBUTES = ("alphas_cumprod", "predict_noise", "sample_size", "in_channels", "device")
_HOW = "model.loader must name a function returning an object with alphas_cumprod, predict_noise(x, t), sample_size, in_channels and device"


def import_loader(spec: str) -> Callable[..., Any]:
    """Return the function named by ``"package.module:function"``, imported from sys.path."""
    module_name, _, attribute = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TargetError(
            f"model.loader {spec!r}: cannot import module {module_name!r} ({exc}). Install the package "
            f"that provides it, or add its folder to PYTHONPATH."
        ) from exc
    except Exception as exc:  # the module is user code: any error while importing it is reported, chained
        raise TargetError(f"model.loader {spec!r}: importing module {module_name!r} failed with {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise TargetError(
                f"model.loader {spec!r}: {module_name} has no attribute {attribute!r} ({part!r} is missing). "
                f"Check the function name after the colon."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise TargetError(f"model.loader {spec!r}: {attribute} is a {type(obj).__name__}, not a function. {_HOW}.")
    return obj


def load_custom_target(spec: str, path: Path | None, *, device: torch.device, dtype: torch.dtype) -> Target:
    """Return the target built by the policy's custom loader, checked against the Target protocol."""
    function = import_loader(spec)
    arguments = {"path": path, "device": device, "dtype": dtype}
    try:
        inspect.signature(function).bind(**arguments)
    except TypeError:
        raise TargetError(
            f"model.loader {spec!r}: the function's signature {inspect.signature(function)} cannot take the "
            f"keyword arguments path, device and dtype. Define it as def {spec.rpartition(':')[2].split('.')[-1]}(path, device, dtype) "
            f"(or accept **kwargs)."
        ) from None
    except ValueError:
        pass  # builtins without a signature: just call them
    try:
        with offline_environment():
            target = function(**arguments)
    except NaaGuardError:
        raise
    except Exception as exc:  # user code
        raise TargetError(f"model.loader {spec!r} raised {type(exc).__name__}: {exc}") from exc
    return as_target(check_target(target, spec))


def check_target(target: Any, spec: str) -> Target:
    """Return ``target`` if it has the Target protocol; raise TargetError naming what is wrong."""
    import torch

    where = f"model.loader {spec!r} returned a {type(target).__name__}"
    missing = [name for name in TARGET_ATTRIBUTES if not hasattr(target, name)]
    if missing:
        raise TargetError(f"{where} without {', '.join(missing)}. {_HOW}.")
    problems = []
    size, channels = target.sample_size, target.in_channels
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"sample_size is {size!r} (expected a positive int: the square image size)")
    if isinstance(channels, bool) or channels not in (1, 3):
        problems.append(f"in_channels is {channels!r} (expected 1 or 3)")
    if not callable(target.predict_noise):
        problems.append("predict_noise is not callable")
    if hasattr(target, "encode") and not callable(target.encode):
        problems.append("encode is not callable (define encode(images, captions) -> (x0, cond), or leave it out for a pixel-space model)")
    try:
        device = torch.device(target.device)
    except (TypeError, RuntimeError):
        problems.append(f"device is {target.device!r} (expected a torch.device)")
        device = None
    alphas = target.alphas_cumprod
    if not isinstance(alphas, torch.Tensor) or alphas.ndim != 1 or alphas.dtype != torch.float32 or len(alphas) < 2:
        problems.append("alphas_cumprod is not a 1-D float32 torch tensor of at least 2 timesteps (use torch.as_tensor(...).float())")
    elif not bool(((alphas > 0) & (alphas <= 1)).all()):
        problems.append("alphas_cumprod has values outside (0, 1]")
    elif device is not None and alphas.device.type != device.type:
        problems.append(f"alphas_cumprod is on {alphas.device}, the target on {device} (move it with .to(device))")
    if problems:
        raise TargetError(f"{where} that does not fit the Target protocol: {'; '.join(problems)}. {_HOW}.")
    return target


def loader_identity(spec: str, path: Path | None) -> str | None:
    """Return the cache identity of a custom-loaded model, or None when it cannot be known."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    material = {"loader": spec, "files": files_digest(files)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
