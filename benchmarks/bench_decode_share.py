"""How much of a policy's attack time goes into decoding images (the sample pass decodes them too).

    python benchmarks/bench_decode_share.py POLICY

Times every ``SampleSet.decode`` call of one audit of POLICY (no stores): those of the sample pass
(the checks; for a latent model also the encodings), and those inside the attacks, which a pixel
model's attacks make again, each for itself. Prints the seconds and the decode share of the
attacks' time. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policy")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    import torch

    from naa_guard.attacks import ATTACKS
    from naa_guard.audit import prepare_audit
    from naa_guard.policy import load_policy
    from naa_guard.samples import SampleSet

    torch.set_num_threads(args.threads)
    spent = [0.0]
    decode = SampleSet.decode

    def timed(samples: SampleSet, start: int, stop: int) -> np.ndarray:
        began = time.perf_counter()
        try:
            return decode(samples, start, stop)
        finally:
            spent[0] += time.perf_counter() - began

    SampleSet.decode = timed  # type: ignore[method-assign]
    prepared = prepare_audit(load_policy(args.policy), progress=False)
    in_pass = spent[0]
    began = time.perf_counter()
    for name, params in prepared.policy.attacks.items():
        prepared.measure(ATTACKS[name](params), prepared.members, prepared.nonmembers)
    attacks = time.perf_counter() - began
    in_attacks = spent[0] - in_pass
    print(f"{len(prepared.members)} members / {len(prepared.nonmembers)} non-members, attacks {', '.join(prepared.policy.attacks)}")
    print(f"decoding in the sample pass {in_pass:.2f} s; attacks {attacks:.2f} s, of which decoding {in_attacks:.2f} s ({in_attacks / attacks:.1%})")


if __name__ == "__main__":
    main()
