"""The device type an audit will score on, told without importing torch where the machine allows.

The chunk store keys stored scores by device type (a score's last bits can differ by device), so
a re-gate from stored chunks must know it; importing torch only to learn "cpu" would cost a fully
cached re-gate most of its time. Only a certain answer is given without torch: ``cpu`` when asked
for, and ``auto`` on a Linux machine with no GPU device node at all (no NVIDIA, ROCm or WSL GPU
driver, so torch could not see a GPU either). Anything else asks torch (:func:`resolve_device`),
except in :func:`device_type`, which takes an explicit ``cuda`` / ``cuda:N`` / ``mps`` at its word:
the scores are computed on that type or not at all (loading the model there fails where it is
missing), so a machine without a GPU re-gates from chunks a GPU machine stored under ``cuda``.
"""

from __future__ import annotations

import glob
import sys

# Device nodes of the drivers through which torch can see a GPU on Linux: NVIDIA (CUDA), AMD
# (ROCm, which torch exposes as cuda) and WSL's GPU paravirtualisation.
GPU_DEVICE_NODES = ("/dev/nvidia*", "/dev/kfd", "/dev/dxg")


def device_type_without_torch(requested: str) -> str | None:
    """Return the device type ``requested`` resolves to, or None when only torch can tell."""
    if "torch" in sys.modules:
        return None  # torch is loaded anyway: let it answer, exactly as when scoring
    if requested == "cpu":
        return "cpu"
    if requested == "auto" and sys.platform.startswith("linux") and not any(glob.glob(pattern) for pattern in GPU_DEVICE_NODES):
        return "cpu"
    return None


def device_type(requested: str) -> str:
    """Return the device type (``cpu``, ``cuda``, ``mps``) the scoring of ``requested`` uses."""
    known = device_type_without_torch(requested)
    if known is not None:
        return known
    if requested.startswith("cuda") or requested == "mps":  # named: scores come from that type or from nowhere
        return requested.split(":")[0]  # a model that must load on a machine without it fails there (resolve_device)
    from naa_guard.targets.base import resolve_device

    return resolve_device(requested).type
