"""A re-gate from a complete cache imports neither torch nor diffusers (issue 19, item 2).

Every score is read back from the CLI's chunk store or the plugin's score cache; hashing the
files, the metrics, the gates and the reports need no torch. The runs below block torch and
diffusers with an import hook and must give the scored run's report.json, except for the fields
that say how this run got its scores (EXPECTED_DIFFERENCES). They block scikit-learn and
scipy.stats too: the metrics, the epsilon bound and the shift check are numpy (and
scipy.special), since importing those two costs a re-gate more than a second.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_setup
from jsondiff import EXPECTED_DIFFERENCES, differences

from naa_guard.attacks.common import sample_keys
from naa_guard.attacks.keys import ROLE_CODES, sample_keys_array
from naa_guard.targets import devicekind

ROOT = Path(__file__).resolve().parents[1]

BLOCKER = '''\
import sys

class _NoTorch:
    """Refuse torch, diffusers, scikit-learn and scipy.stats: the re-gate must not need them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "diffusers", "sklearn") or name == "scipy.stats" or name.startswith("scipy.stats."):
            raise ImportError(f"{name} is blocked in this run")
        return None

sys.meta_path.insert(0, _NoTorch())
'''

def _run(args: list[str], cwd: Path, *, block: Path | None) -> subprocess.CompletedProcess[str]:
    paths = ([str(block)] if block is not None else []) + [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)


@pytest.fixture
def blocker(tmp_path: Path) -> Path:
    folder = tmp_path / "block"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    return folder


def _setup(root: Path) -> Path:
    # device auto (the demo policy's) is told without torch only where no GPU driver is present
    gpu_driver = any(glob.glob(pattern) for pattern in devicekind.GPU_DEVICE_NODES)
    policy = make_tiny_setup(root, thresholds="{auc: 0.99, tpr_at_1pct_fpr: null, decision: point}", extra="report: {dir: ./reports}\n")
    policy.write_text(policy.read_text(encoding="utf-8").replace("device: cpu", "device: cpu" if gpu_driver else "device: auto"), encoding="utf-8")
    return policy


@pytest.mark.parametrize("module", ["torch", "diffusers", "sklearn.metrics", "scipy.stats"])
def test_the_blocker_blocks_the_heavy_imports(tmp_path: Path, blocker: Path, module: str) -> None:
    finished = _run(["-c", f"import {module}"], tmp_path, block=blocker)
    assert finished.returncode != 0 and "is blocked" in finished.stderr
    assert _run(["-c", "import numpy, scipy.special"], tmp_path, block=blocker).returncode == 0


def test_cli_regate_from_the_chunk_store_imports_no_torch_and_reports_the_same(tmp_path: Path, blocker: Path) -> None:
    policy = _setup(tmp_path)
    cache = tmp_path / "cache"
    scored = _run(["-m", "naa_guard", "audit", str(policy), "--cache", str(cache), "--quiet", "--json", str(tmp_path / "scored.json")], tmp_path, block=None)
    assert scored.returncode == 0, scored.stderr
    first = json.loads((tmp_path / "reports" / "report.json").read_text(encoding="utf-8"))
    regate = _run(["-m", "naa_guard", "audit", str(policy), "--cache", str(cache), "--quiet", "--json", str(tmp_path / "cached.json")], tmp_path, block=blocker)
    assert regate.returncode == 0, regate.stderr
    second = json.loads((tmp_path / "reports" / "report.json").read_text(encoding="utf-8"))
    assert first["attacks"]["naa"]["cached"] is False and second["attacks"]["naa"]["cached"] is True
    assert differences(first, second) == EXPECTED_DIFFERENCES
    assert second == json.loads((tmp_path / "cached.json").read_text(encoding="utf-8"))


def test_plugin_regate_from_the_score_cache_imports_no_torch_and_reports_the_same(tmp_path: Path, blocker: Path) -> None:
    policy = _setup(tmp_path / "project")
    args = ["-m", "pytest", "-q", "-p", "no:randomly", str(policy), "-o", f"cache_dir={tmp_path / 'pytest-cache'}", "--naa-report", str(tmp_path / "out")]
    scored = _run(args, tmp_path, block=None)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    first = json.loads(next((tmp_path / "out").rglob("report.json")).read_text(encoding="utf-8"))
    regate = _run(args, tmp_path, block=blocker)
    assert regate.returncode == 0, regate.stdout + regate.stderr
    assert "cached scores, model not loaded" in regate.stdout
    second = json.loads(next((tmp_path / "out").rglob("report.json")).read_text(encoding="utf-8"))
    assert differences(first, second) == EXPECTED_DIFFERENCES


@pytest.mark.parametrize("role", sorted(ROLE_CODES))
def test_numpy_noise_keys_are_the_attacks_keys(role: str) -> None:
    """The chunk check's torch-free keys are exactly the keys the attacks draw their noise from."""
    indices = np.array([0, 1, 7, 255, 1696, 2**31 - 1, 2**31, 2**39 + 12345, (1 << 40) - 1], dtype=np.int64)
    for chosen in (indices, indices[::-2], indices[:0], list(map(int, indices[:3]))):
        expected = sample_keys(role, torch.as_tensor(np.array(chosen, dtype=np.int64))).numpy()
        got = sample_keys_array(role, chosen)
        assert got.dtype == np.int64 and expected.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


def test_device_type_without_torch_answers_only_when_certain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh re-gate process
    monkeypatch.setattr(devicekind.sys, "platform", "linux")
    monkeypatch.setattr(devicekind.glob, "glob", lambda pattern: [])
    assert devicekind.device_type_without_torch("cpu") == "cpu"
    assert devicekind.device_type_without_torch("auto") == "cpu"
    for requested in ("cuda", "cuda:1", "mps"):
        assert devicekind.device_type_without_torch(requested) is None
    monkeypatch.setattr(devicekind.glob, "glob", lambda pattern: ["/dev/nvidia0"] if pattern == "/dev/nvidia*" else [])
    assert devicekind.device_type_without_torch("auto") is None  # a GPU may be there: torch decides
    monkeypatch.setattr(devicekind.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(devicekind.sys, "platform", "darwin")
    assert devicekind.device_type_without_torch("auto") is None  # MPS may be there


def test_device_type_asks_torch_once_it_is_loaded() -> None:
    assert "torch" in sys.modules
    assert devicekind.device_type_without_torch("cpu") is None
    assert devicekind.device_type("cpu") == "cpu"
