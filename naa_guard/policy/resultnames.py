"""The names an audit's results are reported under, fixed by the policy: each listed attack by its
own name, and with ``model.reference`` its calibrated result ``<attack>/ref`` beside it.

Kept in the policy stage so that the scoring code (which names the calibrated results) and the
verdict's list of gated rows (:mod:`naa_guard.verdict.gatelist`) share one spelling without either
importing the other.
"""

from __future__ import annotations

# The calibrated result of attack "loss" is reported as "loss/ref".
CALIBRATED_SUFFIX = "/ref"


def calibrated_name(name: str) -> str:
    """Return the name a calibrated attack result is reported under."""
    return name + CALIBRATED_SUFFIX
