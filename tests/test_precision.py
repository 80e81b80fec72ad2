"""Half precision (issue 18 item 5): ``runtime.dtype: float16 | bfloat16`` runs the UNet and the
text encoders in that dtype and the VAE encoder in float32; a dtype the device cannot compute in,
and a text encoder that overflows in it, are errors that say so and name the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, write_policy
from tiny_sd import make_tiny_sd

from naa_guard.audit import audit
from naa_guard.errors import NonFiniteScoreError, TargetError
from naa_guard.policy import load_policy
from naa_guard.scoring import models
from naa_guard.scoring.models import load_model
from naa_guard.targets import LatentTarget, load_target, read_model_info

SD = FIXTURES / "tiny_sd"


def _policy(tmp_path: Path, dtype: str) -> Path:
    body = (
        f"version: 1\nname: half-{dtype}\n"
        f"model: {{path: {SD / 'model'}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, limit: 20}}\n"
        "attacks: {naa: {}, loss: {}}\n"
        "thresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}\n"
        f"runtime: {{device: cpu, dtype: {dtype}, batch_size: 16, seed: 0}}\n"
    )
    return write_policy(tmp_path / f"half-{dtype}.naa.yaml", body)


def _dtypes(module: torch.nn.Module) -> set[torch.dtype]:
    return {parameter.dtype for parameter in module.parameters()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_unet_and_text_encoder_in_it_and_the_vae_encoder_in_float32(tmp_path: Path, dtype: str) -> None:
    policy = load_policy(_policy(tmp_path, dtype))
    target = load_model(policy, read_model_info(SD / "model"))  # the loading path an audit takes
    half = getattr(torch, dtype)
    assert isinstance(target, LatentTarget)
    assert _dtypes(target.unet) == {half}
    assert [_dtypes(encoder) for encoder in target.text_encoders] == [{half}]
    assert _dtypes(target.vae) == {torch.float32}
    seen: dict[str, set[torch.dtype]] = {"vae input": set(), "text output": set(), "unet input": set()}
    hooks = [
        target.vae.encoder.register_forward_hook(lambda module, args, out: seen["vae input"].add(args[0].dtype)),
        target.text_encoders[0].register_forward_hook(lambda module, args, out: seen["text output"].add(out[0].dtype)),
        target.unet.register_forward_hook(lambda module, args, out: seen["unet input"].add(args[0].dtype)),
    ]
    try:
        result = audit(policy, target=target, progress=False)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"vae input": {torch.float32}, "text output": {half}, "unet input": {half}}
    for attack in result.attacks.values():
        assert np.isfinite(attack.member_scores).all() and np.isfinite(attack.nonmember_scores).all()
        assert len(attack.member_scores) == len(attack.nonmember_scores) == 20


def test_sdxl_runs_both_text_encoders_in_the_half_dtype(tmp_path: Path) -> None:
    make_tiny_sd(tmp_path / "xl", sdxl=True)
    target = load_target(read_model_info(tmp_path / "xl"), allow_pickle=False, device="cpu", dtype="bfloat16")
    assert [_dtypes(encoder) for encoder in target.text_encoders] == [{torch.bfloat16}, {torch.bfloat16}]
    assert _dtypes(target.vae) == {torch.float32}
    x0, cond = target.encode(torch.zeros((2, 3, 32, 32)), ["a red disc", None])
    assert x0.dtype == torch.float32 and all(tensor.dtype == torch.float32 and torch.isfinite(tensor).all() for tensor in cond.values())


def test_a_half_dtype_the_device_cannot_compute_in_is_refused_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_conv2d = torch.nn.functional.conv2d

    def no_half_conv(x, *args, **kwargs):  # type: ignore[no-untyped-def]  # as torch builds without CPU float16 kernels fail
        if x.dtype == torch.float16:
            raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')
        return real_conv2d(x, *args, **kwargs)

    loaded: list[object] = []
    monkeypatch.setattr(torch.nn.functional, "conv2d", no_half_conv)
    monkeypatch.setattr(models, "load_target", lambda *args, **kwargs: loaded.append(args))
    with pytest.raises(TargetError) as caught:
        audit(load_policy(_policy(tmp_path, "float16")), progress=False)
    message = str(caught.value)
    assert "runtime.dtype is float16" in message and "on cpu" in message and "not implemented for 'Half'" in message
    assert "runtime.dtype: float32" in message  # the fix
    assert loaded == []


def test_a_text_encoder_that_overflows_in_float16_is_an_error_naming_it(tmp_path: Path) -> None:
    pipeline = make_tiny_sd(tmp_path / "sd")
    norm = next(module for name, module in pipeline.text_encoder.named_modules() if name.endswith("final_layer_norm"))  # transformers 4 and 5 nest it differently
    with torch.no_grad():
        norm.weight.mul_(1e6)  # finite in float32, beyond float16's 65504
    parts = {name: getattr(pipeline, name) for name in ("vae", "unet", "text_encoder", "tokenizer")}
    target = LatentTarget(parts, pipeline.scheduler.alphas_cumprod, "epsilon", 32, torch.device("cpu"), torch.float16)
    with pytest.raises(NonFiniteScoreError, match=r"text encoder gave NaN or infinite embeddings in torch.float16.*runtime.dtype: float32"):
        target.encode(torch.zeros((1, 3, 32, 32)), ["a red disc"])
