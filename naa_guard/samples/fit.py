"""Fitting images to the model's input size: never silently, only as the policy's ``data.fit`` says.

A model learns its training images in one form (28x28 digits padded to 32x32, photos resized and
cropped to 64x64, ...). Auditing it on images prepared another way weakens every attack, which
reads as less leakage: a false-pass risk. So an image whose size differs from the model's is an
error unless the policy names the preparation used in training:

- ``resize``: scale the shorter side to the model's size (bicubic), then cut the center square;
- ``center_crop``: cut the center square; the image must be at least the model's size;
- ``pad``: place the image at the center of a black square; it must be at most the model's size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from naa_guard.errors import DataError

__all__ = ["FIT_MODES", "fit_array", "fit_image", "size_mismatch"]

FIT_MODES = ("resize", "center_crop", "pad")


WEAKENS = (
    "Never fit to another resolution than the model was trained at: the attacks then see images the model never "
    "learned in that form, every one weakens, and a leaking model can PASS"
)


def size_mismatch(where: str, found: tuple[int, int], size: int, fit: str | None, source: str | None = None) -> DataError:
    """Return the error for an image of size ``found`` (width, height) that ``fit`` cannot bring to ``size``.

    ``source`` says where the model's size comes from (its config file and key). The config is
    named first: a wrong ``sample_size`` is as likely as wrong images, and fitting the images to a
    wrong config would audit a weakened model. The error carries ``image_size`` (the arguments) so
    a caller that knows the model's config can rebuild it with ``source``.
    """
    shown = f"{found[0]}x{found[1]}"
    origin = f" ({source})" if source else " (its config's sample_size)"
    config = f"If the model was trained on {shown} images, its config may be wrong: check sample_size there{'' if source else ' (the UNet config; for a latent model times the VAE scale factor)'}."
    if fit is None:
        error = DataError(
            f"{where} is {shown} pixels, but the model takes {size}x{size}{origin}. naa-guard does not resize silently. "
            f"{config} If training itself prepared these images to {size}x{size}, store them that way or set data.fit in the "
            f"policy to that preparation ({' | '.join(FIT_MODES)}). {WEAKENS}."
        )
    else:
        rule = "at least" if fit == "center_crop" else "at most"
        error = DataError(
            f"{where} is {shown} pixels; data.fit: {fit} needs images {rule} {size}x{size} (the model's input{', ' + source if source else ''}). "
            f"{config} Otherwise set data.fit to the preparation training used, or store the images at {size}x{size}. {WEAKENS}."
        )
    error.image_size = (where, found, size, fit)  # type: ignore[attr-defined]
    return error


def _offsets(found: int, size: int) -> int:
    return abs(found - size) // 2


def fit_image(img: Image.Image, size: int, fit: str | None, where: str) -> Image.Image:
    """Return ``img`` at size x size as ``fit`` says; a differing size without a fit is a DataError."""
    width, height = img.size
    if (width, height) == (size, size):
        return img
    if fit == "resize":
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = _offsets(new_w, size), _offsets(new_h, size)
        return img.crop((left, top, left + size, top + size))
    if fit == "center_crop" and width >= size and height >= size:
        left, top = _offsets(width, size), _offsets(height, size)
        return img.crop((left, top, left + size, top + size))
    if fit == "pad" and width <= size and height <= size:
        canvas = Image.new(img.mode, (size, size), 0)
        canvas.paste(img, (_offsets(width, size), _offsets(height, size)))
        return canvas
    raise size_mismatch(where, (width, height), size, fit)


def fit_array(planes: np.ndarray, size: int, fit: str | None, where: str) -> np.ndarray:
    """Return float C,H,W ``planes`` in [0, 1] at size x size as ``fit`` says (same rules as :func:`fit_image`)."""
    height, width = planes.shape[1:]
    if (width, height) == (size, size):
        return planes
    if fit == "resize":
        # PIL's float mode "F" resizes without quantizing to 8 bits; bicubic may overshoot.
        fitted = [np.asarray(fit_image(Image.fromarray(p.astype(np.float32)), size, fit, where)) for p in planes]
        return np.clip(np.stack(fitted), 0.0, 1.0)
    if fit == "center_crop" and width >= size and height >= size:
        top, left = _offsets(height, size), _offsets(width, size)
        return planes[:, top : top + size, left : left + size]
    if fit == "pad" and width <= size and height <= size:
        top, left = _offsets(height, size), _offsets(width, size)
        return np.pad(planes, ((0, 0), (top, size - height - top), (left, size - width - left)))
    raise size_mismatch(where, (width, height), size, fit)
