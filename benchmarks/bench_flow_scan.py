"""The rectified-flow scan's candidates measured on the project's tiny flow fixtures (issue 26 item 3).

    python benchmarks/bench_flow_scan.py [--family sd3,flux] [--n 32] [--steps 1500] [--seed 0]

Builds the tiny random SD3 and Flux pipelines of ``tests/tiny_flow.py``, draws ``--n`` captioned
member and ``--n`` non-member images (``tests/tiny_sd.py``'s scenes), and scores every candidate
``naa-guard init`` writes for a flow model (loss at each s of the scan, SimA, PIA, NAA) on two
fixtures of each family:

- ``memoriser``: the velocity of ``tests/test_flow.py``'s memorising model, the exact minimiser
  of the flow-matching loss on the members (``v = (x_s - m) / s`` toward the nearest member m);
- ``fine-tune``: the tiny transformer itself trained on the members with their captions
  (``--steps`` Adam steps, s drawn logit-normal as SD3 trains): a model that fits its members
  as far as its capacity allows, the realistic case.

Prints the AUC (members score higher; the leak AUC is max(auc, 1 - auc)) of every candidate.
Nothing here looks at an evaluation split: these are the figures the defaults come from.
About 4 CPU-minutes for both families at the defaults. Prints figures; asserts nothing. Measured (defaults, seed 0;
the figures :mod:`naa_guard.policy.flowinit` cites)::

    candidate          sd3 memoriser     sd3 fine-tune    flux memoriser    flux fine-tune
    loss s=0                   0.508             0.629             0.504             0.761
    loss s=0.01                1.000             0.616             1.000             0.762
    loss s=0.05                1.000             0.612             1.000             0.782
    loss s=0.1                 1.000             0.699             1.000             0.890
    loss s=0.2                 1.000             0.709             1.000             0.937
    loss s=0.3                 1.000             0.661             1.000             0.914
    loss s=0.5                 0.978             0.564             0.978             0.798
    loss s=0.7                 0.673             0.506             0.673             0.677
    loss s=0.9                 0.472             0.469             0.472             0.607
    sima s=0                   0.487             0.679             0.354             0.896
    sima s=0.01                1.000             0.679             1.000             0.880
    sima s=0.05                1.000             0.671             1.000             0.878
    sima s=0.1                 1.000             0.733             1.000             0.941
    pia s=0.1                  1.000             0.838             1.000             0.923
    pia s=0.2                  1.000             0.798             1.000             0.943
    pia s=0.3                  1.000             0.778             1.000             0.989
    pia s=0.5                  1.000             0.762             1.000             0.971
    naa s=0.08                 1.000             0.795             1.000             0.824
    naa s=0.2                  1.000             0.613             1.000             0.699
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SCAN = {"loss": [("t", t) for t in (0, 10, 50, 100, 200, 300, 500, 700, 900)], "sima": [("t", t) for t in (0, 10, 50, 100)], "pia": [("t", t) for t in (100, 200, 300, 500)], "naa": [("t", 80), ("t", 200)]}


def _sets(n: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch
    from tiny_sd import draw

    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(2 * n):
        pixels, caption = draw(rng)
        images.append(pixels)
        captions.append(caption)
    x = torch.from_numpy(np.stack(images).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
    return (x[:n], captions[:n]), (x[n:], captions[n:])


def _train(target, x0, cond, steps: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Fit the target's transformer to the members by the flow-matching loss (logit-normal s, as SD3 trains)."""
    import torch

    from naa_guard.targets.flux import FluxTarget, image_ids, pack, unpack

    transformer = target.transformer
    transformer.train()
    optimiser = torch.optim.Adam(transformer.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = x0.shape
    for _ in range(steps):
        rows = torch.randint(0, n, (16,), generator=generator)
        z0, e = x0[rows], torch.randn((16, c, h, w), generator=generator)
        s = torch.sigmoid(torch.randn(16, generator=generator)).view(-1, 1, 1, 1)
        x_s = (1 - s) * z0 + s * e
        states, pooled = cond["encoder_hidden_states"][rows], cond["pooled_projections"][rows]
        if isinstance(target, FluxTarget):
            guidance = None if target.guidance is None else torch.full((16,), target.guidance)
            out = transformer(
                hidden_states=pack(x_s), timestep=s.flatten(), guidance=guidance, pooled_projections=pooled, encoder_hidden_states=states,
                txt_ids=torch.zeros(states.shape[1], 3), img_ids=image_ids(h, w), return_dict=False,
            )[0]  # fmt: skip
            v = unpack(out, c, h, w)
        else:
            if target.t5 is None:
                states = torch.cat([states, states.new_zeros((16, 256, target.joint_attention_dim))], dim=1)
            v = transformer(hidden_states=x_s, timestep=1000 * s.flatten(), encoder_hidden_states=states, pooled_projections=pooled, return_dict=False)[0]
        loss = ((v - (e - z0)) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    transformer.eval()


def _memorise(target, members):  # type: ignore[no-untyped-def]
    """Replace the target's velocity with the memorising one of tests/test_flow.py."""
    original = target.predict_velocity

    def memorised(x_s, t, cond=None):  # type: ignore[no-untyped-def]
        out = original(x_s, t, cond)
        s = target.flow_time(t)
        if s == 0.0:
            return out
        nearest = ((x_s[:, None] - (1 - s) * members[None]) ** 2).flatten(2).sum(2).argmin(dim=1)
        return (x_s - members[nearest]) / s

    target.predict_velocity = memorised


def _aucs(target, members, nonmembers) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import torch
    from sklearn.metrics import roc_auc_score

    from naa_guard.attacks import get_attack
    from naa_guard.attacks.common import sample_keys

    found = {}
    for name, candidates in SCAN.items():
        attack_class = get_attack(name)
        for key, value in candidates:
            attack = attack_class(attack_class.Params.model_validate({key: value}))
            scores = [
                attack.score(target, x0, sample_keys(role, list(range(x0.shape[0]))), 0, cond).double()
                for role, (x0, cond) in (("members", members), ("nonmembers", nonmembers))
            ]
            labels = [1] * len(scores[0]) + [0] * len(scores[1])
            found[f"{name} s={value / 1000:g}"] = float(roc_auc_score(labels, torch.cat(scores).numpy()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="sd3,flux")
    parser.add_argument("--n", type=int, default=32, help="members and non-members each")
    parser.add_argument("--steps", type=int, default=1500, help="training steps of the fine-tune fixture")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from tiny_flow import make_tiny_flux, make_tiny_sd3

    from naa_guard.targets import load_target, read_model_info

    torch.set_num_threads(1)
    (m_images, m_captions), (n_images, n_captions) = _sets(args.n, args.seed)
    table: dict[str, dict[str, float]] = {}
    for family in args.family.split(","):
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / family
            (make_tiny_flux if family == "flux" else make_tiny_sd3)(folder, seed=args.seed)
            for fixture in ("memoriser", "fine-tune"):
                target = load_target(read_model_info(folder), allow_pickle=False, device="cpu", dtype="float32")
                members, nonmembers = target.encode(m_images, m_captions), target.encode(n_images, n_captions)
                if fixture == "memoriser":
                    _memorise(target, members[0])
                else:
                    _train(target, members[0], members[1], args.steps, args.seed)
                table[f"{family} {fixture}"] = _aucs(target, members, nonmembers)
    columns = list(table)
    print(f"AUC (members score higher), {args.n} v {args.n}, seed {args.seed}, fine-tune {args.steps} steps")
    print(f"{'candidate':<14}" + "".join(f"{c:>18}" for c in columns))
    for row in table[columns[0]]:
        print(f"{row:<14}" + "".join(f"{table[c][row]:>18.3f}" for c in columns))


if __name__ == "__main__":
    main()
