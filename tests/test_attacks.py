"""Tests of the peer attacks (loss, secmi, pia, pian, sima) and the attack registry.

Each attack is checked three ways: its score against the SPEC formula written out here on a tiny
random UNet (same seeded noise, same numbers), its number of model calls per sample, and its
sign convention (a model that predicts one set's noise exactly must score that set higher).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model, write_policy
from diffusers import DDPMScheduler
from fakes import KnownImagesTarget

from naa_guard.attacks import ATTACKS, get_attack
from naa_guard.attacks.common import sample_keys, seeded_noise
from naa_guard.attacks.loss import LossAttack, LossParams
from naa_guard.attacks.pia import PIA, PIAN, PIAParams
from naa_guard.attacks.secmi import SecMI, SecMIParams
from naa_guard.attacks.sima import SimA, SimAParams
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy
from naa_guard.samples import SampleSet
from naa_guard.scoring.runner import score_samples
from naa_guard.targets import DiffusersTarget, load_target, read_model_info
from naa_guard.verdict.metrics import auc

SEED = 7
N = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Return (target, unet, abar, x0, keys): a tiny random UNet and six random images."""
    folder = make_tiny_model(tmp_path_factory.mktemp("attacks") / "model")
    target = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
    abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.float()
    x0 = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return target, target.unet, abar, x0, sample_keys("members", range(N))


def eps(target: DiffusersTarget, x: torch.Tensor, t: int) -> torch.Tensor:
    """Return the model's noise prediction through the attacks' own call path.

    The target pads every call to a multiple of PAD_MULTIPLE samples; a direct ``unet(x, t)`` on
    6 samples would run other CPU kernels, whose results differ in the last bits from machine to
    machine. Through the same padded call the test recomputes only the attack's arithmetic, so
    the comparison is exact up to float rounding of that arithmetic (rtol 1e-6).
    """
    return target.predict_noise(x, t)


def sq_dist(a: torch.Tensor, b: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    return (a.double() - b.double()).abs().pow(p).sum(dim=(1, 2, 3))


# ----------------------------------------------------------------------------- direct re-computation


def test_loss_matches_the_formula(tiny) -> None:  # type: ignore[no-untyped-def]
    target, _, abar, x0, keys = tiny
    t = 200
    e = seeded_noise(keys, (1, 8, 8), SEED, "loss.noise", torch.device("cpu"))
    x_t = math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * e
    expected = -sq_dist(eps(target, x_t, t), e)
    torch.testing.assert_close(LossAttack(LossParams(t=t)).score(target, x0, keys, SEED), expected, rtol=1e-6, atol=0)


def test_secmi_matches_the_formula(tiny) -> None:  # type: ignore[no-untyped-def]
    target, _, abar, x0, keys = tiny

    def ddim(x: torch.Tensor, prediction: torch.Tensor, t_from: int, t_to: int) -> torch.Tensor:
        x0_hat = (x - (1 - abar[t_from]).sqrt() * prediction) / abar[t_from].sqrt()
        return abar[t_to].sqrt() * x0_hat + (1 - abar[t_to]).sqrt() * prediction

    x = x0
    for tau in range(0, 90, 10):  # invert 0 -> 10 -> ... -> 90
        x = ddim(x, eps(target, x, tau), tau, tau + 10)
    x_90 = x
    x_100 = ddim(x_90, eps(target, x_90, 90), 90, 100)
    x_90_again = ddim(x_100, eps(target, x_100, 100), 100, 90)
    expected = -sq_dist(x_90_again, x_90)
    # The score is the small gap between two long chains of nearly equal float32 values: the
    # padded batch of the target and this unpadded one round differently (1e-5 relative at one
    # OpenMP thread); a wrong formula is off by orders of magnitude.
    torch.testing.assert_close(SecMI().score(target, x0, keys, SEED), expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("attack_class", [PIA, PIAN])
def test_pia_and_pian_match_the_formula(tiny, attack_class: type[PIA]) -> None:  # type: ignore[no-untyped-def]
    target, _, abar, x0, keys = tiny
    t, p = 200, 4
    e0 = eps(target, x0, 0)
    if attack_class is PIAN:
        e0 = e0 * math.sqrt(2 / math.pi) / e0.abs().mean(dim=(1, 2, 3), keepdim=True)
    x_t = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * e0
    expected = -sq_dist(e0, eps(target, x_t, t), p)
    torch.testing.assert_close(attack_class().score(target, x0, keys, SEED), expected, rtol=1e-6, atol=0)


def test_pian_differs_from_pia(tiny) -> None:  # type: ignore[no-untyped-def]
    target, _, _, x0, keys = tiny
    assert not torch.allclose(PIA().score(target, x0, keys, SEED), PIAN().score(target, x0, keys, SEED))


# ----------------------------------------------------------------------------- model calls


@pytest.mark.parametrize(
    ("attack", "calls"),
    [
        (LossAttack(), 1),
        (SecMI(), 11),
        (SecMI(SecMIParams(t_sec=40, interval=20)), 3),
        (PIA(), 2),
        (PIAN(PIAParams(t=50)), 2),
        (SimA(), 1),
        (SimA(SimAParams(ts=(20, 50, 100))), 3),
    ],
    ids=["loss", "secmi", "secmi-40-20", "pia", "pian", "sima", "sima-3t"],
)
def test_model_calls_per_sample(tiny, attack, calls: int) -> None:  # type: ignore[no-untyped-def]
    target, _, _, x0, keys = tiny
    forward_calls, sample_queries = target.forward_calls, target.sample_queries
    attack.score(target, x0, keys, SEED)
    assert attack.queries_per_sample == calls
    assert target.forward_calls - forward_calls == calls  # one batch: one forward per query
    assert target.sample_queries - sample_queries == calls * N


@pytest.mark.parametrize("name", ["loss", "secmi", "pia", "pian", "sima"])
def test_scores_do_not_depend_on_the_batch_size(tiny, name: str) -> None:  # type: ignore[no-untyped-def]
    target, _, _, x0, _ = tiny
    samples = SampleSet.from_images(x0.numpy(), tuple(f"s{i}" for i in range(N)), np.arange(N), (None,) * N, Path("x.npz"), ())
    attack = get_attack(name)()
    whole = score_samples(attack, target, samples, "members", batch_size=N, seed=SEED)
    batched = score_samples(attack, target, samples, "members", batch_size=4, seed=SEED)
    np.testing.assert_allclose(batched, whole, rtol=1e-5)


# ----------------------------------------------------------------------------- sign convention


@pytest.mark.parametrize("name", ["naa", "loss", "secmi", "pia", "pian", "sima"])
def test_exactly_predicted_images_score_higher(name: str) -> None:
    generator = torch.Generator().manual_seed(3)
    memorised, unseen = (torch.rand(12, 1, 8, 8, generator=generator) * 2 - 1 for _ in range(2))
    target = KnownImagesTarget(exact=memorised, perturbed=unseen)
    attack = get_attack(name)()
    member_scores = attack.score(target, memorised, sample_keys("members", range(12)), SEED)
    nonmember_scores = attack.score(target, unseen, sample_keys("nonmembers", range(12)), SEED)
    assert auc(member_scores.numpy(), nonmember_scores.numpy()) == 1.0


# ----------------------------------------------------------------------------- registry and parameters


def test_registry_lists_every_attack_with_the_spec_defaults() -> None:
    assert set(ATTACKS) == {"naa", "loss", "secmi", "pia", "pian", "sima"}
    assert LossParams().t == 200
    assert (SecMIParams().t_sec, SecMIParams().interval) == (100, 10)
    assert (PIAParams().t, PIAParams().p) == (200, 4)
    assert (SimAParams().t, SimAParams().p, SimAParams().ts) == (50, 4, None)
    for name, attack_class in ATTACKS.items():
        attack = attack_class()
        assert attack.name == name and attack.paper
        assert attack.describe()["name"] == name


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("secmi: {t_sec: 105}", "Use t_sec 100 or 110"),
        ("secmi: {t_sec: 5, interval: 10}", "Use t_sec 10"),
        ("pia: {p: 0}", "attacks.pia.p"),
        ("loss: {t: -1}", "attacks.loss.t"),
        ("pian: {steps: 3}", "attacks.pian.steps: unknown key"),
        ("sima: {t: 50, ts: [20, 100]}", "attacks.sima: t=50 and ts=\\[20, 100\\] are both given"),
    ],
)
def test_bad_attack_parameters_name_their_key(tmp_path: Path, block: str, message: str) -> None:
    policy = write_policy(
        tmp_path / "p.naa.yaml",
        f"""
        version: 1
        model: {{path: ./model}}
        data: {{members: ./m.npz, nonmembers: ./n.npz}}
        attacks:
          {block}
        """,
    )
    with pytest.raises(PolicyError, match=message.replace(".", r"\.")):
        load_policy(policy)


def test_policy_validation_does_not_import_torch() -> None:
    code = "import sys, naa_guard.policy, naa_guard.attacks; assert 'torch' not in sys.modules, 'torch imported'"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
