"""The attack registry: every attack by name.

Attack modules import torch only inside ``score``, so the registry (and with it policy
validation) stays light enough for pytest collection.
"""

from __future__ import annotations

from naa_guard.attacks.base import Attack, AttackParams
from naa_guard.attacks.loss import LossAttack
from naa_guard.attacks.naa import NAA
from naa_guard.attacks.pia import PIA, PIAN
from naa_guard.attacks.secmi import SecMI
from naa_guard.attacks.sima import SimA

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (NAA, LossAttack, SecMI, PIA, PIAN, SimA)}

__all__ = ["ATTACKS", "Attack", "AttackParams", "get_attack"]


def get_attack(name: str) -> type[Attack]:
    """Return the attack class registered under ``name``."""
    try:
        return ATTACKS[name]
    except KeyError:
        known = ", ".join(sorted(ATTACKS))
        raise KeyError(f"unknown attack {name!r}; known attacks: {known}") from None
