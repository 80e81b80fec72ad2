"""Kept for imports written before the targets package: the custom loader lives in :mod:`naa_guard.targets.custom`."""

from __future__ import annotations

from naa_guard.targets.custom import check_target, import_loader, load_custom_target, loader_identity

__all__ = ["check_target", "import_loader", "load_custom_target", "loader_identity"]
