"""How a confidence level is written: with the digits it needs, so 0.999 reads 99.9%, never 100%.

A level rounded to whole percent would print 0.999 as "upper 100% bound", a bound no interval
has; every gate message, refusal and report writes levels through :func:`percent`.
"""

from __future__ import annotations


def percent(level: float) -> str:
    """Return ``level`` (a fraction) as a percentage with as few decimals as show it exactly: 0.95 -> '95%', 0.999 -> '99.9%'."""
    scaled = 100 * level
    for digits in range(7):
        text = f"{scaled:.{digits}f}"
        if abs(float(text) - scaled) < 1e-9:
            return text + "%"
    return f"{scaled:.6f}%"
