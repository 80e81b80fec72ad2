"""The Flux- / SD3-sized bare transformer forward against the attack on the same rows (``bench_flow_size.py --ceiling``).

The bare forward is ``transformer(...)`` on random inputs of the audit's shapes (packed latents, image and
text ids and the guidance input for Flux; 1000 s time input for SD3) at the rows an audit call computes
(``model_batch(--batch)`` padded to ``PAD_MULTIPLE``), under inference_mode, synchronized on CUDA. The attack
is ``score_chunk`` over the audit's stored encodings on the transformer part alone. Ratio = the bare forward's
cost of the images of one call / the attack's seconds per image-query (1.0: no overhead).
"""

from __future__ import annotations

import argparse
import time
from typing import Any


def bare_forward(target: Any, rows: int, args: argparse.Namespace) -> float:
    """Return seconds per row of a bare transformer forward at ``rows`` rows (random inputs, the audit's shapes)."""
    import torch

    from naa_guard.targets.flux import image_ids, pack

    latent = target.sample_size // 2 ** (len(target.vae.config.block_out_channels) - 1)
    dtype, device = target.dtype, target.device
    x = torch.randn((rows, 16, latent, latent), device=device, dtype=dtype)
    text = torch.randn((rows, target.probe_tokens(), target.joint_attention_dim), device=device, dtype=dtype)
    pooled = torch.randn((rows, int(target.transformer.config.pooled_projection_dim)), device=device, dtype=dtype)
    if args.family == "flux":
        inputs = dict(
            hidden_states=pack(x), timestep=torch.full((rows,), 0.5, device=device), guidance=torch.full((rows,), 3.5, device=device),
            pooled_projections=pooled, encoder_hidden_states=text, txt_ids=torch.zeros(text.shape[1], 3, device=device, dtype=dtype),
            img_ids=image_ids(latent, latent).to(device, dtype), return_dict=False,
        )  # fmt: skip
    else:
        if not target.has_t5:
            text = torch.cat([text, text.new_zeros((rows, 256, target.joint_attention_dim))], dim=1)
        inputs = dict(hidden_states=x, timestep=torch.full((rows,), 500.0, device=device), encoder_hidden_states=text, pooled_projections=pooled, return_dict=False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        if device.type == "cuda":
            target.transformer(**inputs)  # kernels chosen, memory allocated
        sync()
        began = time.perf_counter()
        target.transformer(**inputs)
        sync()
    return (time.perf_counter() - began) / rows


def ceiling(policy: Any, info: Any, args: argparse.Namespace, members: Any, encodings: Any) -> None:
    """Print the bare forward against the attack on the same rows, from the audit's stored encodings, ``--rounds`` times."""
    from naa_guard.attacks import ATTACKS
    from naa_guard.scoring.models import load_model
    from naa_guard.scoring.runner import model_batch, score_chunk
    from naa_guard.targets import base

    target = load_model(policy, info, part="denoiser")
    step = model_batch(args.batch)
    rows = step + (-step % base.PAD_MULTIPLE)
    count = min(step, len(encodings))
    for round_ in range(args.rounds):
        bare = bare_forward(target, rows, args)
        for name, params in policy.attacks.items():
            attack = ATTACKS[name](params)
            began = time.perf_counter()
            score_chunk(attack, target, members, "members", 0, count, batch_size=args.batch, seed=0, encodings=encodings)
            per_query = (time.perf_counter() - began) / (count * attack.queries_per_sample)
            # the audit computes `rows` padded rows per call for `count` images: the bare forward's cost of them
            ideal = bare * rows / count
            print(f"CEILING round {round_ + 1}: bare forward {bare:.4f}s per row at {rows} rows ({ideal:.4f}s per image-query of {count}); "
                  f"attack {name} {per_query:.4f}s per image-query; ratio {ideal / per_query:.3f}", flush=True)  # fmt: skip
