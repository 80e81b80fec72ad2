"""What decoding noted (images fitted, converted, alpha dropped) reaches rank 0's report from every rank.

Each rank decodes only its own chunks; the notes travel with each chunk's result of the sample
pass, so a 2-process audit reports exactly what a 1-process audit reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import make_images, make_tiny_model, write_policy

from naa_guard.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_report_the_decoding_notes_of_both_ranks(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "model")  # 8x8 grayscale
    make_images(tmp_path / "members.npz", 24, size=12, seed=1, channels=3)  # every image fitted and converted to grayscale
    make_images(tmp_path / "nonmembers.npz", 24, size=12, seed=2, channels=3)
    policy = write_policy(tmp_path / "p.naa.yaml", """
        version: 1
        model: {path: ./model}
        data: {members: ./members.npz, nonmembers: ./nonmembers.npz, fit: resize}
        attacks: {loss: {}}
        thresholds: {auc: 0.99, tpr_at_1pct_fpr: null, decision: point}
        runtime: {device: cpu, batch_size: 4}
        """)  # fmt: skip
    main(["audit", str(policy), "--quiet", "--chunk-size", "8", "--json", str(tmp_path / "one.json")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    two = subprocess.run(
        [sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--nproc", "2", "--chunk-size", "8", "--json", str(tmp_path / "two.json")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode in (0, 1), two.stdout + two.stderr
    one_warnings, two_warnings = (json.loads((tmp_path / f"{name}.json").read_text())["warnings"] for name in ("one", "two"))
    assert any("24 of 24 members image(s) were fitted" in warning for warning in one_warnings), one_warnings
    assert two_warnings == one_warnings  # rank 1's chunks (3 of 6 per side) are counted too
