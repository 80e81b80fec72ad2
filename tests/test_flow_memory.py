"""SD3 / Flux at real size: the text encoders (T5-XXL) are released before the transformer loads, scores unchanged."""

from __future__ import annotations

import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from test_flow import CAPTIONS, _policy
from tiny_flow import make_tiny_flux, make_tiny_sd3
from naa_guard.errors import TargetError
from naa_guard.targets import load_target, read_model_info
from naa_guard.targets.flow import FlowTarget
from naa_guard.targets.flux import FluxTarget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow-memory")
    make_tiny_sd3(root / "sd3", t5=True)
    make_tiny_sd3(root / "base", t5=True, seed=5)
    make_tiny_flux(root / "flux")
    return {"sd3": root / "sd3", "base": root / "base", "flux": root / "flux"}


class Spy:
    """Weak references to every text encoder and transformer loaded; what was alive at each transformer forward and encoder load."""

    def __init__(self) -> None:
        self.encoders: list[tuple[str, weakref.ref[Any]]] = []
        self.transformers: list[weakref.ref[Any]] = []
        self.loads: Counter[str] = Counter()
        self.forwards = 0
        self.problems: list[str] = []

    def alive_encoders(self) -> list[str]:
        return [name for name, ref in self.encoders if ref() is not None]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return install_spy(monkeypatch)


def install_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    """Return a Spy watching every load and transformer forward from now on."""
    from naa_guard.targets import components

    watch = Spy()
    load_component = components.load_component

    def spied_load(name: str, folder: Path, transformers: Any, allow_pickle: bool, *rest: Any) -> Any:
        if name.startswith("text_encoder") and any(ref() is not None for ref in watch.transformers):
            watch.problems.append(f"{name} loaded while a transformer is held")
        part = load_component(name, folder, transformers, allow_pickle, *rest)
        if name.startswith("text_encoder"):
            watch.encoders.append((name, weakref.ref(part)))
            watch.loads[name] += 1
        return part

    init = FlowTarget.__init__

    def spied_init(self: FlowTarget, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if self.transformer is not None:
            watch.transformers.append(weakref.ref(self.transformer))

    def spied_forward(original: Any) -> Any:
        def forward(self: FlowTarget, *args: Any, **kwargs: Any) -> torch.Tensor:
            if alive := watch.alive_encoders():  # no gc here: the target must not hold them, not merely leave them to a collection
                watch.problems.append(f"a transformer forward with {alive} still alive")
            watch.forwards += 1
            return original(self, *args, **kwargs)

        return forward

    monkeypatch.setattr(components, "load_component", spied_load)
    monkeypatch.setattr(FlowTarget, "__init__", spied_init)
    monkeypatch.setattr(FlowTarget, "predict_velocity", spied_forward(FlowTarget.predict_velocity))
    monkeypatch.setattr(FluxTarget, "predict_velocity", spied_forward(FluxTarget.predict_velocity))
    return watch


def _scores(result: Any) -> dict[str, tuple[list[float], list[float]]]:
    return {name: (row.member_scores.tolist(), row.nonmember_scores.tolist()) for name, row in result.attacks.items()}


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_text_encoders_are_released_before_the_first_transformer_forward_and_scores_are_unchanged(tmp_path: Path, models: dict[str, Path], family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy

    policy = load_policy(_policy(tmp_path, models[family], attacks="{loss: {}, sima: {}}", count=20))
    # the whole pipeline at once, as before (a handed target loads nothing apart): the scores to match bit for bit
    whole = load_target(read_model_info(models[family]), allow_pickle=False, device="cpu", dtype="float32")
    expected = _scores(audit(policy, target=whole, progress=False))
    del whole
    watch = install_spy(monkeypatch)
    result = audit(policy, progress=False)
    assert watch.problems == [] and watch.forwards > 0
    assert watch.loads["text_encoder_3"] == 1 and watch.alive_encoders() == []  # Flux's text_encoder_2 loads as a T5 ("text_encoder_3")
    assert _scores(result) == expected  # same machine, same code path for every number: bit-identical


def test_a_tuned_audit_with_a_reference_loads_each_t5_once_and_never_beside_a_transformer(tmp_path: Path, models: dict[str, Path], spy: Spy) -> None:
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy

    policy = load_policy(_policy(
        tmp_path, models["sd3"], attacks="{loss: {t: [100, 300]}, sima: {}}", extra=f", reference: {models['base']}", count=30, more="tune: {fraction: 0.34}\n",
    ))  # fmt: skip
    result = audit(policy, progress=False)
    assert result.attacks["loss"].params["t"] in (100, 300) and "loss/ref" in result.attacks
    assert all(np.isfinite(row.member_scores).all() for row in result.attacks.values())
    assert spy.problems == [] and spy.forwards > 0
    # the model's T5 and the reference's, each once: the calibration and evaluation parts (and the
    # reference's) were all encoded before the first transformer loaded, so nothing re-loads them
    assert spy.loads["text_encoder_3"] == 2


def test_a_transformer_part_never_makes_up_an_embedding(models: dict[str, Path]) -> None:
    from naa_guard.targets.flowload import load_flow_target

    for family in ("sd3", "flux"):
        target = load_flow_target(read_model_info(models[family]), allow_pickle=False, device="cpu", dtype="float32", part="denoiser")
        assert target.text_encoders == [] and target.t5 is None and target.transformer is not None
        with pytest.raises(TargetError, match="never scores a caption with another embedding"):
            target.encode(torch.zeros(1, 3, 32, 32), [CAPTIONS[0]])
        encoders = load_flow_target(read_model_info(models[family]), allow_pickle=False, device="cpu", dtype="float32", part="encoders")
        assert encoders.transformer is None and encoders.t5 is not None
        x0, cond = encoders.encode(torch.zeros(1, 3, 32, 32), [CAPTIONS[0]])
        with pytest.raises(TargetError, match="text encoders and VAE only"):
            encoders.predict_noise(x0, 10, cond)


def test_encoding_after_the_transformer_loaded_releases_it_first(tmp_path: Path, models: dict[str, Path], spy: Spy) -> None:
    from naa_guard.policy import load_policy
    from naa_guard.scoring.models import model_source

    source = model_source(load_policy(_policy(tmp_path, models["flux"], attacks="{loss: {}}", count=2)))
    assert source.in_parts
    scorer_target = source.target()  # the transformer (and VAE) alone
    assert scorer_target.text_encoders == [] and spy.loads == Counter()
    del scorer_target
    encoders = source.encoder()  # a chunk found without encodings: the transformer goes first
    assert source.ready is None and spy.problems == [] and source.encoder_loads == 1
    assert encoders.encode(torch.zeros(1, 3, 32, 32), [CAPTIONS[0]])[1]["encoder_hidden_states"].shape[1] == 512
    del encoders
    source.target()
    assert spy.alive_encoders() == []


def test_text_encoders_are_built_in_the_audit_dtype_with_the_values_of_a_float32_load_cast(models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-precision audit never holds a float32 copy of T5 (19 GB for T5-XXL): the encoder is built in runtime.dtype."""
    import transformers

    from naa_guard.targets import components

    built: list[Any] = []
    original = transformers.T5EncoderModel.from_pretrained

    def spied(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs.get("dtype"))
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", spied)
    half = load_target(read_model_info(models["sd3"]), allow_pickle=False, device="cpu", dtype="bfloat16")
    assert built == [torch.bfloat16] and all(p.dtype == torch.bfloat16 for p in half.t5.parameters())
    whole = components.load_component("text_encoder_3", models["sd3"] / "text_encoder_3", transformers, False)
    assert all(p.dtype == torch.float32 for p in whole.parameters())  # the default: as stored, never config.json's dtype
    for (name, a), (_, b) in zip(half.t5.state_dict().items(), whole.to(torch.bfloat16).state_dict().items()):
        assert torch.equal(a, b), name
