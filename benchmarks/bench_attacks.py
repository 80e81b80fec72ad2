"""Every attack's scoring rate beside the raw UNet forward ceiling (SPEC section 7, issue 10).

    python benchmarks/bench_attacks.py [--device auto] [--dtype float32] [--size 32] [--channels 3]
                                       [--width 64] [--batch 64] [--n 256] [--rounds 3] [--profile ATTACK]

Builds a random UNet2DModel (``--width 64`` gives block channels 64/128/128, the 6.3M-parameter
reference shape at 32x32x3), then, round after round, times the raw forward pass (``unet(x, t)``
under inference_mode at the batch size and dtype of the attacks, no padding, no naa-guard code)
and each attack's full scoring path (``naa_guard.scoring.runner.score_samples``: chunking, per-sample
seeded noise, padding, host copies). Forward and attack run back to back inside each round, so
the ratio ``attack rate / (forward rate / queries)`` is robust to a busy machine; the median
over rounds is printed. ``--profile ATTACK`` prints torch.profiler's top operators for one
scoring pass of that attack instead. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--width", type=int, default=64, help="channels of the first UNet block (64: the 6.3M reference)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=256, help="samples scored per attack and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attacks", default="naa,loss,secmi,pia,pian,sima")
    parser.add_argument("--profile", metavar="ATTACK", help="print the profiler's top operators for this attack and stop")
    args = parser.parse_args()

    import numpy as np
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from naa_guard.attacks import ATTACKS
    from naa_guard.samples import SampleSet
    from naa_guard.scoring.runner import score_samples
    from naa_guard.targets import DiffusersTarget, resolve_device

    device, dtype = resolve_device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    width = args.width
    unet = UNet2DModel(
        sample_size=args.size, in_channels=args.channels, out_channels=args.channels,
        block_out_channels=(width, 2 * width, 2 * width), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    target = DiffusersTarget(unet, DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, "epsilon", device, dtype)
    images = np.random.default_rng(0).uniform(-1, 1, (args.n, args.channels, args.size, args.size)).astype(np.float32)
    samples = SampleSet.from_images(images, tuple(map(str, range(args.n))), np.arange(args.n), (None,) * args.n, Path("bench"), ())
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x_device = torch.from_numpy(images).to(device, dtype)

    def forwards() -> None:
        with torch.inference_mode():
            for start in range(0, args.n, args.batch):
                batch = x_device[start : start + args.batch]
                unet(batch, torch.full((len(batch),), 80, device=device)).sample.float()

    def scorer(name: str) -> Callable[[], object]:
        attack = ATTACKS[name]()
        return lambda: score_samples(attack, target, samples, "members", batch_size=args.batch, seed=0)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        run = scorer(args.profile)
        run()
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
            run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return

    def timed(run: Callable[[], object]) -> float:
        sync()
        start = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - start

    names = args.attacks.split(",")
    forwards()  # warm-up: first calls allocate and pick kernels
    for name in names:
        scorer(name)()
    ratios: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        for name in names:
            queries = ATTACKS[name]().queries_per_sample
            forward_rate = args.n / timed(forwards)
            attack_rate = args.n / timed(scorer(name))
            ratios[name].append(attack_rate / (forward_rate / queries))
            rates[name].append((forward_rate, attack_rate))
            print(f"round {round_number + 1} {name}: forward {forward_rate:.1f}/s, attack {attack_rate:.2f} samples/s, ratio {ratios[name][-1]:.3f}", flush=True)
    params = sum(p.numel() for p in unet.parameters())
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device {device} ({where}), dtype {args.dtype}, UNet {params / 1e6:.1f}M params, {args.size}x{args.size}x{args.channels}, batch {args.batch}, n {args.n}, rounds {args.rounds}")
    print(f"{'attack':6s} {'queries':>7s} {'forwards/s':>11s} {'ceiling':>9s} {'samples/s':>10s} {'ratio':>6s}  (medians over rounds; ratio per round: attack rate / (forward rate / queries))")
    for name in names:
        queries = ATTACKS[name]().queries_per_sample
        forward_rate = statistics.median(rate[0] for rate in rates[name])
        attack_rate = statistics.median(rate[1] for rate in rates[name])
        print(f"{name:6s} {queries:7d} {forward_rate:11,.1f} {forward_rate / queries:9,.1f} {attack_rate:10,.1f} {statistics.median(ratios[name]):6.3f}  per round {', '.join(f'{r:.3f}' for r in ratios[name])}")


if __name__ == "__main__":
    main()
