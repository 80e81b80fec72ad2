"""The demo's building blocks: the digits split, a short training run, and what it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from naa_guard.demo import build_demo, digits_split
from naa_guard.policy import load_policy


def test_digits_split_is_seeded_and_disjoint() -> None:
    members, nonmembers = digits_split(100, seed=0)
    again, _ = digits_split(100, seed=0)
    other, _ = digits_split(100, seed=1)
    assert members.shape == (100, 8, 8) and members.dtype == np.uint8 and len(nonmembers) == 1697
    assert np.array_equal(members, again) and not np.array_equal(members, other)
    assert members.max() == 255 and members.min() == 0


def test_build_demo_writes_a_loadable_model_data_and_policy(tmp_path: Path) -> None:
    artifacts = build_demo(tmp_path / "demo", n_members=20, steps=2, progress=False)
    policy = load_policy(artifacts.policy)
    assert policy.model.path == artifacts.model and (artifacts.model / "model_index.json").is_file()
    assert (artifacts.model / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert policy.data.members == artifacts.members and policy.data.nonmembers == artifacts.nonmembers
    assert policy.attacks["naa"].noise == "scaled"
    assert len(np.load(artifacts.members)["images"]) == 20


def test_shipped_demo_policy_points_at_the_demo_output() -> None:
    from naa_guard.demo import demo_policy_text

    shipped = Path(__file__).parents[1] / "policies" / "demo.naa.yaml"
    assert shipped.read_text(encoding="utf-8") == demo_policy_text("../naa-guard-demo")
    policy = load_policy(shipped)
    assert policy.model.path == (shipped.parents[1] / "naa-guard-demo" / "model").resolve()


def test_the_demo_gates_are_certifiable_at_the_demo_counts() -> None:
    """The demo must still fail for its leak, not be refused: a model that does not leak could pass its limits."""
    from naa_guard.demo import DEMO_MEMBERS
    from naa_guard.verdict.resolvable import unresolvable_gates

    policy = load_policy(Path(__file__).parents[1] / "policies" / "demo.naa.yaml")
    members, nonmembers = digits_split(DEMO_MEMBERS, seed=0)
    assert policy.thresholds.decision == "upper_ci"
    assert unresolvable_gates(policy, len(members), len(nonmembers)) == []


def test_the_shortened_demo_still_leaks_and_fails_its_gates(tmp_path: Path) -> None:
    """Issue 19: the demo trains in about a minute (fewer steps, a smaller UNet, low timesteps
    oversampled) and must still show a clear leak: leak AUC >= 0.95, both gates FAIL under upper_ci."""
    from naa_guard.audit import audit

    artifacts = build_demo(tmp_path / "demo", progress=False)
    result = audit(load_policy(artifacts.policy), progress=False)
    assert result.attacks["naa"].leakage.leak_auc >= 0.95
    assert [(gate.metric, gate.status) for gate in result.gates] == [("auc", "fail"), ("tpr_at_1pct_fpr", "fail")]
    assert not result.passed and not result.errored
