"""Tests of ``naa-guard init`` (naa_guard/init_policy.py): the written policy validates and audits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import OVERFIT, make_tiny_model
from PIL import Image

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import DataError, PolicyError, TargetError
from naa_guard.init_policy import inspect_model, inspect_set, write_initial_policy
from naa_guard.policy import load_policy
from naa_guard.verdict.resolvable import needed_per_side, null_auc_upper, smallest_certifiable_auc, unresolvable_gates


def test_init_on_the_overfit_fixture_writes_a_policy_that_validates_and_audits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "policies" / "digits.naa.yaml"
    code = main(["init", str(OVERFIT / "model"), str(OVERFIT / "members.npz"), str(OVERFIT / "nonmembers.npz"), "-o", str(output)])
    assert code == 0
    text = output.read_text()
    assert "pixel-space diffusion model: DDPMPipeline, images 8x8, 1 channel(s)" in text
    assert "prediction type epsilon, 1000 training timesteps" in text
    assert "array file, 100 samples, sizes 8x8" in text and "array file, 300 samples, sizes 8x8" in text
    assert "tpr_at_1pct_fpr: null   # needs >= 1000 non-members (and enough members) to be certified; you have 100 / 300" in text
    assert "auc: 0.60           # certifiable: the smallest AUC limit 100 members / 300 non-members can certify is 0.60" in text
    assert f"wrote {output}" in capsys.readouterr().out
    policy = load_policy(output)
    assert policy.name == "digits" and policy.model.path == (OVERFIT / "model").resolve()
    assert policy.thresholds.limits() == {"auc": 0.6}  # only what 100 / 300 samples resolve
    assert policy.report.dir == output.parent / "naa-report"
    assert policy.thresholds.decision == "upper_ci"
    result = audit(policy, device="cpu", progress=False)
    assert list(policy.attacks) == ["naa", "sima", "pia", "loss"]  # the strong cheap peers
    assert sum(attack.queries_per_sample for attack in result.attacks.values()) == 9
    assert [(gate.attack, gate.metric, gate.status) for gate in result.gates if gate.attack == "naa"] == [("naa", "auc", "fail")]  # the fixture leaks


def test_init_writes_an_auc_limit_the_counts_can_certify(tmp_path: Path) -> None:
    """40 per side cannot certify 0.60 (a model that does not leak has an upper bound near 0.68): init writes what they can."""
    for role in ("members", "nonmembers"):
        np.savez(tmp_path / f"{role}.npz", images=np.load(OVERFIT / f"{role}.npz")["images"][:40])
    output = write_initial_policy(OVERFIT / "model", tmp_path / "members.npz", tmp_path / "nonmembers.npz", tmp_path / "small.naa.yaml")
    policy = load_policy(output)
    floor = smallest_certifiable_auc(40, 40, 0.95)
    needed = needed_per_side(lambda n: null_auc_upper(n, n, 0.95) <= 0.60, start=20)
    assert policy.thresholds.auc == floor == 0.68
    assert f"the smallest AUC limit 40 members / 40 non-members can certify is 0.68; 0.60 needs {needed} per side" in output.read_text()
    assert unresolvable_gates(policy, 40, 40) == []  # every gate it wrote can go either way


def test_init_refuses_to_overwrite_and_to_write_unresolvable_gates(tmp_path: Path) -> None:
    (tmp_path / "taken.naa.yaml").write_text("keep me")
    with pytest.raises(PolicyError, match="already exists.*--force"):
        write_initial_policy(OVERFIT / "model", OVERFIT / "members.npz", OVERFIT / "nonmembers.npz", tmp_path / "taken.naa.yaml")
    np.savez(tmp_path / "few.npz", images=np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(PolicyError, match="too few samples to resolve any gate: 5 members"):
        write_initial_policy(OVERFIT / "model", tmp_path / "few.npz", OVERFIT / "nonmembers.npz", tmp_path / "new.naa.yaml")


def test_init_counts_an_image_folder_and_the_captions_of_a_manifest(tmp_path: Path) -> None:
    model = inspect_model(make_tiny_model(tmp_path / "model", sample_size=8, prediction_type="v_prediction"))
    assert (model.kind, model.sample_size, model.in_channels, model.prediction_type) == ("pixel", 8, 1, "v_prediction")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(25):
        Image.fromarray(np.full((16, 16), i, np.uint8)).save(folder / f"{i:02d}.png")
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"path": f"{i:02d}.png", **({"caption": "a digit"} if i % 2 else {})}) for i in range(25)))
    images = inspect_set(folder, "members", model)
    assert (images.form, images.count, images.sizes) == ("image folder", 25, ("16x16",))
    manifest = inspect_set(folder / "train.jsonl", "members", model)
    assert (manifest.form, manifest.count, manifest.captions) == ("manifest", 25, 12)


def test_init_reads_a_latent_pipeline_from_its_json_files_only(tmp_path: Path) -> None:
    """No weights are needed: model_index.json listing a vae makes it latent, the VAE's depth sets the image size."""
    for sub, config in {
        "unet": {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4},
        "scheduler": {"_class_name": "PNDMScheduler", "prediction_type": "epsilon", "num_train_timesteps": 1000},
        "vae": {"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512]},
    }.items():
        (tmp_path / sub).mkdir()
        (tmp_path / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")).write_text(json.dumps(config))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}))
    model = inspect_model(tmp_path)
    assert (model.kind, model.pipeline, model.sample_size, model.in_channels) == ("latent", "StableDiffusionPipeline", 512, 3)
    with pytest.raises(TargetError, match="no unet/config.json"):
        inspect_model(tmp_path / "vae")


# ----------------------------------------------------------------------------- captions and conditioning

SD = Path(__file__).parent / "fixtures" / "tiny_sd"


def _copy_set(root: Path, side: str, *, metadata: bool) -> Path:
    """Copy a tiny SD set into an image folder, with its captions in a metadata.jsonl when asked."""
    import csv
    import shutil

    shutil.copytree(SD / side, root / side)
    if metadata:
        with (SD / f"{side}.csv").open(encoding="utf-8") as handle:
            rows = [{"file_name": Path(row["path"]).name, "text": row["caption"]} for row in csv.DictReader(handle)]
        (root / side / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return root / side


def test_init_finds_imagefolder_captions_and_writes_caption_conditioning(tmp_path: Path) -> None:
    members, nonmembers = _copy_set(tmp_path, "members", metadata=True), _copy_set(tmp_path, "nonmembers", metadata=True)
    output = write_initial_policy(SD / "model", members, nonmembers, tmp_path / "sd.naa.yaml")
    text = output.read_text()
    assert "image folder, 40 samples, sizes 32x32; 40 with captions" in text
    assert "conditioning: caption   # 40 of 40 members and 40 of 40 non-members have a caption" in text
    assert load_policy(output).data.conditioning == "caption"


def test_init_without_captions_for_a_text_model_writes_a_policy_that_refuses_until_the_user_chooses(tmp_path: Path) -> None:
    members, nonmembers = _copy_set(tmp_path, "members", metadata=False), _copy_set(tmp_path, "nonmembers", metadata=False)
    output = write_initial_policy(SD / "model", members, nonmembers, tmp_path / "sd.naa.yaml")
    text = output.read_text()
    assert "# NO captions found (0 of 40 members and 0 of 40 non-members have a caption)" in text
    assert "metadata.jsonl" in text and "replace auto with empty" in text and "\n  conditioning: auto\n" in text
    with pytest.raises(PolicyError, match="no member or non-member has a caption"):
        audit(load_policy(output), device="cpu", progress=False)  # refused before any model call


def test_init_refuses_members_equal_to_nonmembers(tmp_path: Path) -> None:
    folder = _copy_set(tmp_path, "members", metadata=False)
    with pytest.raises(PolicyError, match="the members and the non-members are the same source"):
        write_initial_policy(SD / "model", folder, folder / ".." / "members", tmp_path / "same.naa.yaml")
    # two manifests over the same image files
    rows = "path,caption\n" + "".join(f"members/{i:03d}.png,x\n" for i in range(40))
    (tmp_path / "a.csv").write_text(rows)
    (tmp_path / "b.csv").write_text(rows)
    with pytest.raises(PolicyError, match="share 40 image file"):
        write_initial_policy(SD / "model", tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "files.naa.yaml")
    assert not (tmp_path / "same.naa.yaml").exists() and not (tmp_path / "files.naa.yaml").exists()


def test_init_on_images_of_another_size_asks_for_a_fit_and_says_what_a_wrong_one_costs(tmp_path: Path) -> None:
    """The written hint checks the config first and never offers a resize without the warning (issue 14 item 10)."""
    model = make_tiny_model(tmp_path / "model", sample_size=8)
    for side in ("members", "nonmembers"):
        folder = tmp_path / side
        folder.mkdir()
        for i in range(25):
            Image.fromarray(np.random.default_rng(i + (0 if side == "members" else 100)).integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    written = write_initial_policy(model, tmp_path / "members", tmp_path / "nonmembers", tmp_path / "p.naa.yaml", force=True)
    text = written.read_text()
    assert "REQUIRED before auditing" in text and "check the model config" in text
    assert "weakens every attack, and a leaking model can PASS" in text
    assert "  # fit: resize\n" not in text  # no ready-made resize to uncomment
    with pytest.raises(DataError, match="16x16"):  # unfitted, the policy refuses the images
        audit(load_policy(written), device="cpu", progress=False)


def test_init_writes_the_reference_for_a_lora_and_for_a_given_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members, nonmembers = SD / "lora_members.csv", SD / "nonmembers.csv"
    output = tmp_path / "lora.naa.yaml"
    assert main(["init", str(SD / "model"), str(members), str(nonmembers), "--lora", str(SD / "lora"), "-o", str(output)]) == 0
    policy = load_policy(output)
    assert policy.model.lora == (SD / "lora").resolve() and policy.model.reference == "base"

    import shutil

    shutil.copytree(OVERFIT / "model", tmp_path / "base")  # the same architecture, as a base would have
    output = write_initial_policy(OVERFIT / "model", OVERFIT / "members.npz", OVERFIT / "nonmembers.npz", tmp_path / "ft.naa.yaml", reference=tmp_path / "base")
    assert load_policy(output).model.reference == (tmp_path / "base").resolve()
    make_tiny_model(tmp_path / "wide", sample_size=16)
    with pytest.raises(TargetError, match="sample_size: 8 vs 16"):  # a base that cannot calibrate is refused at init already
        write_initial_policy(OVERFIT / "model", OVERFIT / "members.npz", OVERFIT / "nonmembers.npz", tmp_path / "wide.naa.yaml", reference=tmp_path / "wide")
