"""What storing a latent model's encodings saves: encoding once per chunk against once per attack.

    python benchmarks/bench_encodings.py [--per-side 1000] [--work DIR] [--threads 1]

Audits the committed tiny Stable Diffusion pipeline (tests/fixtures/tiny_sd) on generated
captioned 32x32 imagefolders (one caption per image) with the loss and PIA attacks, each run in a
fresh process, three ways:

- ``on the fly``: no stored encodings; every attack reads and encodes every image itself (what a
  target whose encodings cannot be stored gets);
- ``stored, cold``: an empty chunk store; the sample pass (the checks) decodes each chunk once and
  encodes it, and both attacks read the stored encodings;
- ``stored, new process``: the same store, another seed (so no score is cached, the encodings
  are): nothing is decoded for the attacks and neither encoder runs.

Prints the seconds of the sample pass and of each attack, and the images and captions the VAE and
text encoder saw. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import make_latent_workload  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from naa_guard import audit as audit_module
from naa_guard.attacks import ATTACKS
from naa_guard.audit import prepare_audit
from naa_guard.policy import load_policy
from naa_guard.scoring import runner
from naa_guard.scoring.chunks import ChunkStore
from naa_guard.scoring.models import ModelSource

mode, store = sys.argv[2], sys.argv[3]
if mode == "fly":
    runner.stores_encodings = lambda target: False
    audit_module._first_pass_encodings = lambda *args: None
policy = load_policy(sys.argv[1])
if mode == "warm":
    policy = policy.model_copy(update={"runtime": policy.runtime.model_copy(update={"seed": 1})})
targets = []
target = ModelSource.target
def spy(self):
    loaded = target(self)
    targets.append(loaded)
    return loaded
ModelSource.target = spy
started = time.perf_counter()
prepared = prepare_audit(policy, progress=False, chunk_store=ChunkStore(store) if mode != "fly" else None)
timings = {"sample pass": time.perf_counter() - started}
for name, params in prepared.policy.attacks.items():
    started = time.perf_counter()
    prepared.measure(ATTACKS[name](params), prepared.members, prepared.nonmembers)
    timings[name] = time.perf_counter() - started
model = targets[0] if targets else None
print(json.dumps({"timings": timings, "images": getattr(model, "encoded_images", 0), "texts": getattr(model, "encoded_texts", 0)}))
"""


def run(policy: Path, mode: str, store: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(policy), mode, str(store), str(threads)], env=env, cwd=policy.parent, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-side", type=int, default=1000)
    parser.add_argument("--work", type=Path, help="folder for the generated data (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="naa-guard-encodings-"))
    policy = make_latent_workload(work / f"latent-n{args.per_side}", args.per_side, attacks="{loss: {}, pia: {}}")
    store = work / f"store-n{args.per_side}"
    shutil.rmtree(store, ignore_errors=True)  # "cold" starts from an empty store
    print(f"tiny SD pipeline, {args.per_side} members + {args.per_side} non-members (32x32, one caption each), loss then PIA, {args.threads} torch thread(s)")
    for label, mode in (("on the fly", "fly"), ("stored, cold", "cold"), ("stored, new process", "warm")):
        figures = run(policy, mode, store, args.threads)
        times = ", ".join(f"{name} {seconds:6.1f} s" for name, seconds in figures["timings"].items())
        print(f"  {label:20s} {times}; VAE saw {figures['images']} images, text encoder {figures['texts']} captions", flush=True)


if __name__ == "__main__":
    main()
