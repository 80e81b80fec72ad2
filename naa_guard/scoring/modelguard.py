"""The launcher's rule that the model stays unloaded: inside :func:`model_stays_unloaded`, loading it raises :class:`ModelNeeded`.

A ``--nproc`` launcher runs every model-free check in its own process before torchrun starts
(:mod:`naa_guard.scoring.storedfirst`); the ranks load the model. Kept apart from the runners so
that the model source can ask it without importing the distributed code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ModelNeeded", "check_model_may_load", "model_stays_unloaded"]


class ModelNeeded(BaseException):
    """Raised by StoredOnlyRunner when a chunk needs the model: the audit must be scored by the ranks.

    A BaseException, as KeyboardInterrupt is: it ends the attempt and must never be caught on
    the way by a handler that turns failures into audit errors.
    """


_no_model_here = False  # within model_stays_unloaded(): this process is a launcher, the ranks load the model


@contextmanager
def model_stays_unloaded() -> Iterator[None]:
    """Within the block, loading the model raises ModelNeeded (a custom loader's, which an audit loads for the image geometry)."""
    global _no_model_here
    previous, _no_model_here = _no_model_here, True
    try:
        yield
    finally:
        _no_model_here = previous


def check_model_may_load(name: str) -> None:
    """Raise ModelNeeded inside :func:`model_stays_unloaded`; else do nothing (called before a model loads)."""
    if _no_model_here:
        raise ModelNeeded(f"the model of {name} loads on the ranks")
