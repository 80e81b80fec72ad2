"""LoRAs checked layer by layer (naa_guard/targets/loralayers.py) on SD3 and SD pipelines too: a file
tensor that reaches an adapter of another layer of the same shape (found by value, wrong by layer) is
refused. diffusers is patched here to misplace tensors, as a converter bug would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info

pytestmark = pytest.mark.usefixtures("one_thread")
SWAP = {"attn1.to_q.": "attn1.to_k.", "attn1.to_k.": "attn1.to_q.", "attn.to_q.": "attn.to_k.", "attn.to_k.": "attn.to_q."}


def _swapped(original):  # type: ignore[no-untyped-def]
    """Return a lora_state_dict that gives each to_q tensor to to_k and back (same shapes)."""

    def load(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(cls, *args, **kwargs)
        state_dict = out[0] if isinstance(out, tuple) else out
        moved = {next((k.replace(a, b) for a, b in SWAP.items() if a in k), k): v for k, v in state_dict.items()}
        return (moved, *out[1:]) if isinstance(out, tuple) else moved

    return classmethod(load)


def test_an_sd3_lora_loaded_into_other_layers_of_the_same_shapes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SD3 LoRAs are checked layer by layer too: each value reaching some adapter is not enough, it must reach its own layer."""
    from diffusers import StableDiffusion3Pipeline
    from test_flow import _sd3_lora
    from tiny_flow import make_tiny_sd3

    make_tiny_sd3(tmp_path / "sd3")
    lora = _sd3_lora(tmp_path / "sd3", tmp_path / "lora")
    monkeypatch.setattr(StableDiffusion3Pipeline, "lora_state_dict", _swapped(StableDiffusion3Pipeline.lora_state_dict.__func__))  # type: ignore[attr-defined]
    with pytest.raises(TargetError, match="transformer_blocks.0.attn.to_[qk]"):
        load_target(read_model_info(tmp_path / "sd3", lora=lora), allow_pickle=False, device="cpu", dtype="float32")


def test_an_sd_lora_loaded_into_other_layers_of_the_same_shapes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import StableDiffusionPipeline

    model, lora = FIXTURES / "tiny_sd" / "model", FIXTURES / "tiny_sd" / "lora"
    load_target(read_model_info(model, lora=lora), allow_pickle=False, device="cpu", dtype="float32")  # as saved: loads
    monkeypatch.setattr(StableDiffusionPipeline, "lora_state_dict", _swapped(StableDiffusionPipeline.lora_state_dict.__func__))  # type: ignore[attr-defined]
    with pytest.raises(TargetError, match=r"attn1\.to_[qk]"):
        load_target(read_model_info(model, lora=lora), allow_pickle=False, device="cpu", dtype="float32")
