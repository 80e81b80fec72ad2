"""Listing and decoding webdataset shards against reading the same images as files (issue 27).

    python benchmarks/bench_shards.py [--sizes 10000,100000] [--image 16] [--per-shard 1000] [--work DIR]

For each size N, writes N random PNGs (``--image`` pixels square, RGB) once as a folder of files
and once as webdataset shards of ``--per-shard`` samples (the same bytes, a ``.txt`` caption
each), then in a fresh subprocess per source lists the set (``list_samples``: no image decoded)
and decodes every image chunk by chunk as an audit's sample pass does (1024 at a time). Prints
the listing and decoding throughput (samples/s) and the process's peak RSS (``ru_maxrss``) for
each source and size: the shards are read as streams and by member offsets, never extracted, so
their memory should stay flat in N like the folder's. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time
from naa_guard.samples import list_samples
started = time.perf_counter()
listed = list_samples(sys.argv[1], size=int(sys.argv[2]), channels=3, role="members")
listing = time.perf_counter() - started
started = time.perf_counter()
for start in range(0, len(listed), 1024):
    listed.decode(start, min(start + 1024, len(listed)))
decoding = time.perf_counter() - started
print(len(listed), listing, decoding, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""
MIB = 1 << 20


def write_sources(root: Path, n: int, image: int, per_shard: int) -> tuple[Path, Path]:
    """Write n random PNGs as a folder and as shards of per_shard samples; return (folder, shard folder)."""
    folder, shards = root / "folder", root / "shards"
    folder.mkdir(parents=True)
    shards.mkdir()
    rng = np.random.default_rng(0)
    tar = None
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(image, image, 3), dtype=np.uint8)).save(buffer, format="PNG")
        data = buffer.getvalue()
        (folder / f"{i:07d}.png").write_bytes(data)
        if i % per_shard == 0:
            if tar is not None:
                tar.close()
            tar = tarfile.open(shards / f"shard-{i // per_shard:06d}.tar", "w")
        for suffix, payload in (("png", data), ("txt", f"sample {i}".encode())):
            info = tarfile.TarInfo(f"{i:07d}.{suffix}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))  # type: ignore[union-attr]
    if tar is not None:
        tar.close()
    return folder, shards


def measure(source: Path, image: int) -> tuple[int, float, float, int]:
    """Return (samples, listing seconds, decoding seconds, peak RSS bytes) of one fresh process."""
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(source), str(image)], check=True, capture_output=True, text=True, env=env).stdout.split()
    return int(out[0]), float(out[1]), float(out[2]), int(out[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--image", type=int, default=16)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    print(f"{'N':>8} {'source':>7} {'list/s':>10} {'decode/s':>10} {'peak RSS MiB':>13}")
    for n in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            folder, shards = write_sources(Path(tmp), n, args.image, args.per_shard)
            for name, source in (("folder", folder), ("shards", shards)):
                count, listing, decoding, peak = measure(source, args.image)
                print(f"{count:>8} {name:>7} {count / listing:>10.0f} {count / decoding:>10.0f} {peak / MIB:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
