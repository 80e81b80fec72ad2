"""Paths stay inside their roots, and only regular files are opened (issue 24, item 5).

A named pipe blocks its reader forever, so every file naa-guard opens itself (manifests, metadata
files, caption sidecars, images, model configs) is refused when it is a pipe or device; and a file
of an image folder that is a symlink out of the folder follows the manifests' data.allow_outside rule.
Each hang-prone case runs in a thread (or a subprocess) with a timeout, so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_tiny_setup
from PIL import Image

from naa_guard.errors import DataError
from naa_guard.samples import load_samples

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Return call()'s result, or re-raise its exception; fail (not hang) when it takes longer than ``seconds``."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the test thread
            outcome.append((False, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert outcome, f"the call did not return within {seconds}s (it blocked on a pipe?)"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def image_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("L", (8, 8), 20 * i).save(folder / f"{i}.png")
    return folder


def load(folder: Path, **options: Any) -> Any:
    return within(30, lambda: load_samples(folder, size=8, channels=1, **options))


# ----------------------------------------------------------------------------- pipes and devices are never opened


@needs_fifo
def test_a_named_pipe_called_metadata_jsonl_is_an_error_not_a_hang(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    os.mkfifo(folder / "metadata.jsonl")
    with pytest.raises(DataError, match=r"metadata file .*metadata\.jsonl.* is a named pipe, not a regular file.*never opens"):
        load(folder)


@needs_fifo
def test_a_named_pipe_as_a_caption_sidecar_is_an_error_not_a_missing_caption(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "0.txt").write_text("a cat")
    os.mkfifo(folder / "1.txt")
    with pytest.raises(DataError, match=r"caption sidecar .*1\.txt.* is a named pipe"):
        load(folder)


@needs_fifo
def test_a_symlink_to_a_named_pipe_as_a_manifest_is_an_error(tmp_path: Path) -> None:
    image_folder(tmp_path / "images")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "images" / "list.csv").symlink_to(tmp_path / "pipe")
    with pytest.raises(DataError, match="neither a folder nor a regular file|named pipe"):
        load(tmp_path / "images" / "list.csv")


def test_a_device_as_a_metadata_file_is_an_error(tmp_path: Path) -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    folder = image_folder(tmp_path / "images")
    (folder / "metadata.jsonl").symlink_to("/dev/null")  # /dev/zero would be read forever (and fill the memory); /dev/null is the safe device
    with pytest.raises(DataError, match=r"metadata\.jsonl.* is a character device"):
        load(folder, allow_outside=True)


@needs_fifo
def test_the_cli_refuses_a_named_pipe_metadata_file_with_exit_2(tmp_path: Path) -> None:
    policy = make_tiny_setup(tmp_path, attacks="{loss: {}}")
    image_folder(tmp_path / "members", 6)
    os.mkfifo(tmp_path / "members" / "metadata.jsonl")
    policy.write_text(policy.read_text().replace("./members.npz", "./members"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "naa_guard", "audit", str(policy), "--quiet", "--no-reports"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "metadata.jsonl" in done.stderr and "named pipe" in done.stderr and "Traceback" not in done.stderr


@needs_fifo
def test_the_plugin_refuses_a_named_pipe_metadata_file(pytester: pytest.Pytester) -> None:
    policy = make_tiny_setup(pytester.path, attacks="{loss: {}}")
    image_folder(pytester.path / "members", 6)
    os.mkfifo(pytester.path / "members" / "metadata.jsonl")
    policy.write_text(policy.read_text().replace("./members.npz", "./members"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--naa-no-cache", timeout=120)
    assert result.ret != 0
    output = result.stdout.str()
    assert "metadata.jsonl" in output and "named pipe" in output, output


# ----------------------------------------------------------------------------- links out of an image folder


def test_an_image_linked_from_outside_the_folder_needs_allow_outside(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    image_folder(tmp_path / "elsewhere", 1)
    (folder / "linked.png").symlink_to(tmp_path / "elsewhere" / "0.png")
    with pytest.raises(DataError, match=r"linked\.png .*outside the folder.*data\.allow_outside: true"):
        load(folder)
    assert len(load(folder, allow_outside=True)) == 5


def test_a_link_inside_the_folder_is_fine(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "sub").mkdir()
    (folder / "sub" / "again.png").symlink_to(Path("..") / "0.png")
    assert len(load(folder)) == 5


@pytest.mark.parametrize("name", ["metadata.jsonl", "0.txt"])
def test_a_caption_file_linked_from_outside_the_folder_needs_allow_outside(tmp_path: Path, name: str) -> None:
    folder = image_folder(tmp_path / "images")
    outside = tmp_path / "outside.txt"
    if name == "metadata.jsonl":
        outside.write_text("".join(f'{{"file_name": "{i}.png", "text": "caption {i}"}}\n' for i in range(4)))
    else:
        outside.write_text("a cat")
    (folder / name).symlink_to(outside)
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')} of the members folder .* resolves to .*outside the folder.*data\.allow_outside: true"):
        load(folder)
    samples = load(folder, allow_outside=True)
    assert "caption 0" in samples.captions or "a cat" in samples.captions


@needs_fifo
def test_a_named_pipe_in_a_saved_dataset_is_an_error_not_a_hang(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from test_hfdataset import split_dataset

    from naa_guard.samples import list_samples

    split_dataset().save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved" / "train").glob("*.arrow"))
    arrow.unlink()
    os.mkfifo(arrow)  # datasets would block opening it
    with pytest.raises(DataError, match=r"\.arrow, which is a named pipe, not a regular file"):
        within(30, lambda: list_samples(tmp_path / "saved", size=32, channels=3, split="train"))


@needs_fifo
def test_init_counts_an_image_folder_with_a_named_pipe_without_opening_it(tmp_path: Path) -> None:
    from conftest import make_tiny_model

    from naa_guard.init_policy import inspect_model, inspect_set

    model = inspect_model(make_tiny_model(tmp_path / "model", sample_size=8))
    folder = image_folder(tmp_path / "images", 4)
    os.mkfifo(folder / "blocked.png")  # the audit skips it with a note; init must neither open nor count it
    images = within(60, lambda: inspect_set(folder, "members", model))
    assert (images.form, images.count, images.sizes) == ("image folder", 4, ("8x8",))


@needs_fifo
def test_a_named_pipe_as_the_baseline_is_an_error_not_a_hang(tmp_path: Path) -> None:
    from naa_guard.errors import BaselineError
    from naa_guard.verdict.baseline import load_baseline

    os.mkfifo(tmp_path / "report.json")
    with pytest.raises(BaselineError, match="is a named pipe, not a regular file"):
        within(30, lambda: load_baseline(tmp_path / "report.json"))
