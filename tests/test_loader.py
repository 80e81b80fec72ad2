"""Tests for naa_guard.targets.custom: custom ``model.loader`` functions, the only way a policy runs code."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, write_policy
from fakes import DictCache

from naa_guard.audit import audit
from naa_guard.errors import PolicyError, TargetError
from naa_guard.policy import load_policy, parse_policy
from naa_guard.targets.custom import check_target, import_loader, loader_identity

# A user's loader module: a toy noise predictor that needs no diffusers folder. ``path`` may name a
# file whose first byte scales the prediction, so that the model's identity lives in that file.
LOADER_MODULE = '''
import os
from pathlib import Path

import torch

CALLS = []


class ToyTarget:
    def __init__(self, scale, device, alphas=None, sample_size=8):
        betas = torch.linspace(1e-4, 0.02, 1000)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0) if alphas is None else alphas
        self.sample_size, self.in_channels, self.device, self.scale = sample_size, 1, device, scale

    def predict_noise(self, x, t):
        return self.scale * x * (1 + t / 1000)


def load(path, device, dtype):
    CALLS.append({"path": path, "device": device, "dtype": dtype, "offline": os.environ.get("HF_HUB_OFFLINE")})
    scale = 0.1 if path is None else Path(path).read_bytes()[0] / 255
    return ToyTarget(scale, device)


def positional_only(weights):
    return ToyTarget(0.1, torch.device("cpu"))


def broken(path, device, dtype):
    raise ValueError("checkpoint 'x' is corrupt")


def float64_schedule(path, device, dtype):
    return ToyTarget(0.1, device, alphas=torch.linspace(0.999, 0.01, 1000, dtype=torch.float64))


def odd_geometry(path, device, dtype):
    return ToyTarget(0.1, device, sample_size="8")


NOT_A_FUNCTION = 3
'''

_names = itertools.count()


@pytest.fixture
def loader_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Return the name of a freshly written loader module importable from sys.path."""
    name = f"user_loader_{next(_names)}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(LOADER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return name


def _policy(tmp_path: Path, model: str) -> Path:
    make_images(tmp_path / "members.npz", 24, seed=1)
    make_images(tmp_path / "nonmembers.npz", 24, seed=2)
    return write_policy(tmp_path / "custom.naa.yaml", f"""
        version: 1
        model: {model}
        data: {{members: ./members.npz, nonmembers: ./nonmembers.npz}}
        attacks: {{naa: {{t: 40, queries: 3}}}}
        thresholds: {{auc: 0.99, tpr_at_1pct_fpr: null}}
        runtime: {{device: cpu, batch_size: 8}}
        """)  # fmt: skip



@pytest.mark.parametrize("spec", ["pkg:load", "pkg.sub.module:load", "_p1.m2:Factory.build"])
def test_policy_accepts_well_formed_loader_strings(tmp_path: Path, spec: str) -> None:
    raw = {"version": 1, "model": {"loader": spec}, "data": {"members": "m", "nonmembers": "n"}}
    assert parse_policy(raw, tmp_path / "p.naa.yaml").model.loader == spec


@pytest.mark.parametrize("spec", ["pkg", "pkg:", ":load", "pkg/mod.py:load", "pkg:load()", "1pkg:load", "pkg:load:again"])
def test_policy_rejects_malformed_loader_strings(tmp_path: Path, spec: str) -> None:
    raw = {"version": 1, "model": {"loader": spec}, "data": {"members": "m", "nonmembers": "n"}}
    with pytest.raises(PolicyError, match=r"model\.loader: expected 'package\.module:function'"):
        parse_policy(raw, tmp_path / "p.naa.yaml")


def test_a_loader_does_not_take_a_unet_subfolder(tmp_path: Path) -> None:
    raw = {"version": 1, "model": {"loader": "pkg:load", "unet_subfolder": "unet_ema"}, "data": {"members": "m", "nonmembers": "n"}}
    with pytest.raises(PolicyError, match="unet_subfolder applies to diffusers folders only"):
        parse_policy(raw, tmp_path / "p.naa.yaml")


def test_a_custom_loader_audits_a_model_without_a_diffusers_folder(tmp_path: Path, loader_module: str) -> None:
    import sys

    result = audit(load_policy(_policy(tmp_path, f"{{loader: '{loader_module}:load'}}")), progress=False)
    calls = sys.modules[loader_module].CALLS
    assert len(calls) == 1 and calls[0]["path"] is None and str(calls[0]["device"]) == "cpu"
    assert calls[0]["offline"] == "1"  # the Hugging Face libraries are forced offline while it runs
    assert result.model_loaded and result.device == "cpu" and set(result.attacks) == {"naa"}
    assert np.isfinite(result.attacks["naa"].member_scores).all()


def test_a_loader_with_a_path_is_cached_by_the_files_under_it(tmp_path: Path, loader_module: str) -> None:
    import sys

    (tmp_path / "weights.bin").write_bytes(bytes([40]))
    policy = load_policy(_policy(tmp_path, f"{{loader: '{loader_module}:load', path: ./weights.bin}}"))
    cache = DictCache()
    first = audit(policy, progress=False, score_cache=cache)
    second = audit(policy, progress=False, score_cache=cache)
    # The loader still runs (only the target knows the image geometry), but scoring is skipped.
    assert not first.attacks["naa"].cached and second.attacks["naa"].cached
    np.testing.assert_array_equal(first.attacks["naa"].member_scores, second.attacks["naa"].member_scores)
    assert [call["path"] for call in sys.modules[loader_module].CALLS] == [tmp_path / "weights.bin"] * 2
    (tmp_path / "weights.bin").write_bytes(bytes([200]))  # a new model: the old scores must not be reused
    third = audit(policy, progress=False, score_cache=cache)
    assert not third.attacks["naa"].cached


def test_a_loader_without_a_path_is_not_cached_and_says_so(tmp_path: Path, loader_module: str) -> None:
    policy = load_policy(_policy(tmp_path, f"{{loader: '{loader_module}:load'}}"))
    cache = DictCache()
    result = audit(policy, progress=False, score_cache=cache)
    assert cache.entries == {} and any("not cached" in warning for warning in result.warnings)


def test_loader_identity_changes_with_the_files_and_the_loader(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.bin").write_bytes(b"1")
    first = loader_identity("pkg:load", tmp_path / "w")
    assert first == loader_identity("pkg:load", tmp_path / "w") and first is not None
    assert loader_identity("pkg:other", tmp_path / "w") != first
    (tmp_path / "w" / "a.bin").write_bytes(b"2")
    assert loader_identity("pkg:load", tmp_path / "w") != first
    assert loader_identity("pkg:load", None) is None


@pytest.mark.parametrize(
    ("function", "words"),
    [
        ("missing", ("has no attribute 'missing'", "function name after the colon")),
        ("NOT_A_FUNCTION", ("is a int, not a function",)),
        ("positional_only", ("cannot take the keyword arguments path, device and dtype", "def positional_only(path, device, dtype)")),
        ("broken", ("raised ValueError: checkpoint 'x' is corrupt",)),
        ("float64_schedule", ("alphas_cumprod is not a 1-D float32 torch tensor", ".float()")),
        ("odd_geometry", ("sample_size is '8'", "positive int")),
    ],
)  # fmt: skip
def test_loader_problems_are_clear_target_errors(tmp_path: Path, loader_module: str, function: str, words: tuple[str, ...]) -> None:
    policy = load_policy(_policy(tmp_path, f"{{loader: '{loader_module}:{function}'}}"))
    with pytest.raises(TargetError) as caught:
        audit(policy, progress=False)
    message = str(caught.value)
    assert f"model.loader '{loader_module}:{function}'" in message
    assert all(word in message for word in words), message


def test_an_error_while_importing_the_loader_module_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad_loader_module.py").write_text("import naa_guard_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TargetError, match="cannot import module 'bad_loader_module'.*naa_guard_missing_dependency"):
        import_loader("bad_loader_module:load")
    (tmp_path / "syntax_loader_module.py").write_text("def load(:\n")
    with pytest.raises(TargetError, match="importing module 'syntax_loader_module' failed with SyntaxError"):
        import_loader("syntax_loader_module:load")


def test_check_target_lists_every_problem() -> None:
    import torch

    class Half:
        alphas_cumprod = torch.full((10,), 2.0)
        predict_noise = None
        sample_size, in_channels, device = 0, 2, "cpu"

    with pytest.raises(TargetError) as caught:
        check_target(Half(), "pkg:load")
    message = str(caught.value)
    for part in ("sample_size is 0", "in_channels is 2", "predict_noise is not callable", "values outside (0, 1]"):
        assert part in message
    assert message.startswith("model.loader 'pkg:load' returned a Half that does not fit the Target protocol")
