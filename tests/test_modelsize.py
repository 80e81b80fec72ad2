"""Image-size errors name the model config the size comes from (naa_guard/modelsize.py, imagefit.py): a wrong
sample_size is as likely as wrong images, and data.fit is never suggested without saying that fitting to
another resolution than the model was trained at weakens the audit (a leaking model can then PASS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, write_policy

from naa_guard.audit import audit
from naa_guard.errors import DataError
from naa_guard.policy import load_policy

SD = FIXTURES / "tiny_sd"
WEAKENS = "Never fit to another resolution than the model was trained at"


def _sd_with_unet_sample_size(tmp_path: Path, sample_size: int, vae_sample_size: int | None = None) -> Path:
    """Copy the tiny SD fixture (trained on 32x32 images: UNet 8 x VAE factor 4) with a wrong UNet sample_size."""
    model = tmp_path / "model"
    shutil.copytree(SD / "model", model)
    config = json.loads((model / "unet" / "config.json").read_text())
    (model / "unet" / "config.json").write_text(json.dumps({**config, "sample_size": sample_size}))
    if vae_sample_size is not None:
        vae = json.loads((model / "vae" / "config.json").read_text())
        (model / "vae" / "config.json").write_text(json.dumps({**vae, "sample_size": vae_sample_size}))
    return model


def _policy(tmp_path: Path, model: Path, data: str = "") -> Path:
    body = (
        f"version: 1\nname: sd\nmodel: {{path: {model}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}{data}}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\nruntime: {device: cpu}\n"
    )
    return write_policy(tmp_path / "sd.naa.yaml", body)


def test_a_wrong_unet_sample_size_is_named_as_a_possible_cause_before_data_fit(tmp_path: Path) -> None:
    model = _sd_with_unet_sample_size(tmp_path, 16)  # the config says 64x64; the model was trained at 32x32
    with pytest.raises(DataError) as caught:
        audit(load_policy(_policy(tmp_path, model)), progress=False)
    message = str(caught.value)
    assert "is 32x32 pixels, but the model takes 64x64 (sample_size 16 in " in message
    assert f"{model / 'unet' / 'config.json'} x the VAE's scale factor 4" in message
    assert "If the model was trained on 32x32 images, its config may be wrong: check sample_size there" in message
    assert message.index("config may be wrong") < message.index("data.fit")
    assert WEAKENS in message and "a leaking model can PASS" in message


def test_configs_that_disagree_are_said_to_disagree(tmp_path: Path) -> None:
    model = _sd_with_unet_sample_size(tmp_path, 16, vae_sample_size=32)
    with pytest.raises(DataError, match=r"the VAE's own config says sample_size 32, so the configs disagree and one of them is wrong"):
        audit(load_policy(_policy(tmp_path, model)), progress=False)


def test_a_fit_that_cannot_apply_still_warns_before_suggesting_another(tmp_path: Path) -> None:
    model = _sd_with_unet_sample_size(tmp_path, 4)  # the config says 16x16: pad cannot shrink 32x32 images
    with pytest.raises(DataError) as caught:
        audit(load_policy(_policy(tmp_path, model, ", fit: pad")), progress=False)
    message = str(caught.value)
    assert "data.fit: pad needs images at most 16x16" in message and "sample_size 4 in " in message
    assert "config may be wrong" in message and WEAKENS in message
    assert "use data.fit: resize" not in message  # the old hint, which turned a leaking model into a PASS
