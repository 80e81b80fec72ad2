"""Where two report.json files differ, and the fields a re-gate from stored scores may differ in."""

from __future__ import annotations

from typing import Any

# What differs between a scored run's report.json and a re-gate's from stored scores, and why:
# - attacks.naa.seconds: the time the attack took (scoring vs. reading the stored scores);
# - attacks.naa.cached: whether its scores came from a cache (False, then True);
# - device, environment.device: the device the model was loaded on; the re-gate loads none
#   ("cpu" vs. None / "not loaded (cached scores)").
EXPECTED_DIFFERENCES = {"attacks.naa.seconds", "attacks.naa.cached", "device", "environment.device"}


def differences(a: Any, b: Any, where: str = "") -> set[str]:
    """Return the dotted paths at which two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {path for key in set(a) | set(b) for path in differences(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{where}.{key}" if where else key)}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {path for i, (x, y) in enumerate(zip(a, b)) for path in differences(x, y, f"{where}[{i}]")}
    return set() if a == b else {where}
