"""Keys the newer transformer families (PixArt, Sana, Flux 2 [klein]) do not read are refused there, never ignored.

model.variant, model.single_file, model.max_sequence_length and model.guidance were built for the
UNet families, SD3 and Flux; a PixArt, Sana or Flux 2 folder loads its plain weights with its own
prompt length and no guidance input. A key that would silently change nothing is an error (exit 2)
naming the key, so the audit never runs on another model than the policy describes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file
from test_flow import _policy
from tiny_flux2 import make_tiny_flux2_klein
from tiny_pixart import make_tiny_pixart
from tiny_sana import make_tiny_sana

from naa_guard.cli import main
from naa_guard.errors import TargetError
from naa_guard.targets import read_model_info
from naa_guard.targets.detect import read_single_file_info

pytestmark = pytest.mark.usefixtures("one_thread")

MAKERS = {"pixart": make_tiny_pixart, "sana": make_tiny_sana, "flux2": make_tiny_flux2_klein}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    for name, make in MAKERS.items():
        make(root / name)
    return {name: root / name for name in MAKERS}


@pytest.mark.parametrize("family", list(MAKERS))
def test_a_precision_variant_is_refused_on_the_newer_families(folders: dict[str, Path], family: str) -> None:
    read_model_info(folders[family])  # the folder itself is read
    with pytest.raises(TargetError, match="model.variant is 'fp16'.*plain weight files"):
        read_model_info(folders[family], variant="fp16")


@pytest.mark.parametrize("family", list(MAKERS))
def test_a_single_file_with_a_newer_family_as_its_config_is_refused(tmp_path: Path, folders: dict[str, Path], family: str) -> None:
    import torch

    file = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.x_embedder.proj.weight": torch.zeros(2, 2)}, str(file))
    with pytest.raises(TargetError, match="single-file checkpoints are read for SD 1.x / 2.x / SDXL, SD3 / SD3.5 and Flux pipelines only"):
        read_single_file_info(file, folders[family])


@pytest.mark.parametrize("family", ["sana", "flux2"])
@pytest.mark.parametrize("extra", [", max_sequence_length: 77", ", guidance: 3.5"])
def test_the_t5_length_and_guidance_keys_are_refused_on_sana_and_flux2(
    tmp_path: Path, folders: dict[str, Path], family: str, extra: str, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    assert main(["audit", str(_policy(tmp_path, folders[family], attacks="{loss: {}}", extra=extra)), "--quiet"]) == 2
    err = capsys.readouterr().err
    key = "model.max_sequence_length" if "max_sequence_length" in extra else "model.guidance"
    assert key in err and "not an SD3 / Flux pipeline" in err
