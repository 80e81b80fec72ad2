"""Measure NAA's scoring rate against the raw UNet forward ceiling (SPEC section 7).

    python benchmarks/bench_naa.py [--device auto] [--size 32] [--channels 3] [--batch 256] [--n 2048]

Builds a random UNet2DModel (the 6.3M-parameter reference shape by default), times raw forward
passes and NAA scoring (k=5) over the same images, and prints forwards/s, samples/s and the ratio
of NAA's rate to the ceiling ``forward_rate / k``. Also checks that scores do not depend on the
batch size. Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from naa_guard.attacks.common import sample_keys
    from naa_guard.attacks.naa import NAA
    from naa_guard.targets import DiffusersTarget, resolve_device

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=args.size, in_channels=args.channels, out_channels=args.channels,
        block_out_channels=(64, 128, 128), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    params = sum(p.numel() for p in unet.parameters())
    target = DiffusersTarget(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, "epsilon", device, dtype)
    images = torch.rand(args.n, args.channels, args.size, args.size, device=device) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        fn()  # warm-up
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - start

    def forwards() -> None:
        for i in range(0, args.n, args.batch):
            target.predict_noise(images[i : i + args.batch], 80)

    attack = NAA()

    def naa(batch: int) -> np.ndarray:
        scores = []
        for i in range(0, args.n, batch):
            keys = sample_keys("members", range(i, min(i + batch, args.n)))
            scores.append(attack.score(target, images[i : i + batch], keys, seed=0).cpu().numpy())
        return np.concatenate(scores)

    forward_s = timed(forwards)
    naa_s = timed(lambda: naa(args.batch))
    forward_rate = args.n / forward_s
    naa_rate = args.n / naa_s
    ceiling = forward_rate / attack.queries_per_sample
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), dtype {args.dtype}, UNet {params / 1e6:.1f}M params, {args.size}x{args.size}x{args.channels}, batch {args.batch}, n {args.n}")
    print(f"forward: {forward_rate:,.0f} forwards/s")
    print(f"NAA k=5: {naa_rate:,.0f} samples/s ({1e3 / naa_rate:.3f} ms/sample); ceiling {ceiling:,.0f} samples/s; ratio {naa_rate / ceiling:.2f}")
    small = naa(7)[: min(args.n, 512)]
    large = naa(args.batch)[: min(args.n, 512)]
    print(f"batch 7 vs {args.batch}: identical scores = {np.array_equal(small, large)}, max |diff| = {np.abs(small - large).max():.3g}")


if __name__ == "__main__":
    main()
