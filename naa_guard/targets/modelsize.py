"""Where the model's image size comes from, named in the error for images of another size.

An image-size mismatch has two possible causes: images stored at another size than training used,
or a model config whose ``sample_size`` is wrong. The data loader only knows the number; this
wrapper adds the config file and key (and, for a latent pipeline, whether the VAE's own config
disagrees), so the message can say which file to check before anyone reaches for ``data.fit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from naa_guard.errors import DataError, NaaGuardError
from naa_guard.samples.fit import size_mismatch

Prepared = TypeVar("Prepared")


def size_source(policy: Any) -> str | None:
    """Return where the policy's model takes its image size from (config file and key); None when unknown."""
    model = policy.model
    if model.loader is not None:
        return f"the sample_size of the target {model.loader} returns"
    if model.path is None:
        return None
    from naa_guard.targets import read_model_info

    try:
        info = read_model_info(model.path, model.unet_subfolder, variant=model.variant, weights=False)
    except NaaGuardError:
        return None
    describe = getattr(info, "size_source", None)
    return describe() if describe is not None else None


def explain_image_sizes(prepare: Callable[..., Prepared]) -> Callable[..., Prepared]:
    """Return ``prepare`` whose image-size errors name the model config the size comes from."""

    @functools.wraps(prepare)
    def wrapper(policy: Any, *args: Any, **kwargs: Any) -> Prepared:
        try:
            return prepare(policy, *args, **kwargs)
        except DataError as exc:
            mismatch = getattr(exc, "image_size", None)
            source = size_source(policy) if mismatch is not None else None
            if source is None:
                raise
            raise size_mismatch(*mismatch, source=source) from None

    return wrapper
