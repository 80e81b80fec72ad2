"""Checkpoints as training tools leave them: a single-file (ldm / A1111 layout) checkpoint with model.config,
and model.path: org/name resolved in a local Hugging Face hub cache; each audits like the diffusers folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, make_tiny_setup, write_policy
from ldm_layout import write_ldm_checkpoint

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import PolicyError, TargetError
from naa_guard.policy import load_policy

SD = FIXTURES / "tiny_sd"


def sd_policy(tmp_path: Path, model: str, name: str = "sd") -> Path:
    return write_policy(
        tmp_path / f"{name}.naa.yaml",
        f"version: 1\nname: {name}\nmodel: {{{model}}}\n"
        f"data: {{members: {SD / 'members.csv'}, nonmembers: {SD / 'nonmembers.csv'}, limit: 20}}\n"
        "attacks: {loss: {}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\n"
        "runtime: {device: cpu, batch_size: 16, seed: 0}\n",
    )


@pytest.fixture(scope="module")
def folder_scores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("folder")
    loss = audit(load_policy(sd_policy(tmp, f"path: {SD / 'model'}")), progress=False).attacks["loss"]
    return {"members": loss.member_scores, "nonmembers": loss.nonmember_scores}


def configs_only(tmp_path: Path) -> Path:
    """Return a copy of the fixture pipeline without its weights: the configs a single file needs."""
    folder = tmp_path / "base"
    shutil.copytree(SD / "model", folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


@pytest.mark.parametrize("form", [".safetensors", ".ckpt"])
def test_a_single_file_checkpoint_audits_like_its_diffusers_folder(tmp_path: Path, folder_scores, form: str) -> None:  # type: ignore[no-untyped-def]
    checkpoint = write_ldm_checkpoint(SD / "model", tmp_path / f"sd{form}")
    model = f"single_file: {checkpoint}, config: {configs_only(tmp_path)}" + (", allow_pickle: true" if form == ".ckpt" else "")
    result = audit(load_policy(sd_policy(tmp_path, model)), progress=False)
    loss = result.attacks["loss"]
    assert result.model_loaded
    np.testing.assert_array_equal(loss.member_scores, folder_scores["members"])
    np.testing.assert_array_equal(loss.nonmember_scores, folder_scores["nonmembers"])


def test_a_pickle_single_file_needs_allow_pickle(tmp_path: Path) -> None:
    checkpoint = write_ldm_checkpoint(SD / "model", tmp_path / "sd.ckpt")
    with pytest.raises(TargetError, match="pickle checkpoint.*model.allow_pickle: true"):
        audit(load_policy(sd_policy(tmp_path, f"single_file: {checkpoint}, config: {configs_only(tmp_path)}")), progress=False)


@pytest.mark.parametrize("damage", ["drop_unet_tensor", "extra_vae_tensor", "no_text_encoder"])
def test_a_single_file_missing_or_extra_tensors_is_an_error(tmp_path: Path, damage: str) -> None:
    from safetensors.torch import load_file, save_file

    checkpoint = write_ldm_checkpoint(SD / "model", tmp_path / "sd.safetensors")
    state = load_file(checkpoint)
    if damage == "drop_unet_tensor":
        state.pop("model.diffusion_model.out.2.weight")
        message = r"unet weights do not match.*1 missing \['conv_out.weight'\]"
    elif damage == "extra_vae_tensor":
        state["first_stage_model.decoder.up.0.block.5.norm1.weight"] = torch.ones(4)
        message = r"vae weights do not match.*extra"
    else:
        state = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}
        message = "no text_encoder weights"
    save_file(state, checkpoint)
    with pytest.raises(TargetError, match=message):
        audit(load_policy(sd_policy(tmp_path, f"single_file: {checkpoint}, config: {configs_only(tmp_path)}")), progress=False)


def test_single_file_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="single_file takes model.config"):
        load_policy(sd_policy(tmp_path, f"single_file: {tmp_path / 'x.safetensors'}"))
    with pytest.raises(PolicyError, match="model.config applies to model.single_file only"):
        load_policy(sd_policy(tmp_path, f"path: {SD / 'model'}, config: {SD / 'model'}"))


# ----------------------------------------------------------------------------- the local hub cache


def fake_cache(cache: Path, repo: str, model: Path, commits: tuple[str, ...] = ("a1b2c3d4" * 5,), main: str | None = "first") -> Path:
    """Lay out ``model`` in a hub cache as huggingface_hub does: blobs, snapshots/<commit>/ (symlinks), refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for commit in commits:
        snapshot = folder / "snapshots" / commit
        for file in sorted(p for p in model.rglob("*") if p.is_file()):
            blob = folder / "blobs" / f"{commit[:8]}-{file.relative_to(model).as_posix().replace('/', '_')}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, blob)
            (snapshot / file.relative_to(model)).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / file.relative_to(model)).symlink_to(blob)
    if main is not None:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(commits[0] if main == "first" else main)
    return folder


def test_a_cached_hub_id_audits_the_refs_main_snapshot_and_the_report_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_tiny_setup(tmp_path / "folder", attacks="{loss: {}}", thresholds="{auc: 0.99, tpr_at_1pct_fpr: null}")
    expected = audit(load_policy(policy), progress=False).attacks["loss"]
    old, new = "0" * 40, "f" * 40
    fake_cache(tmp_path / "hub", "acme/tiny-ddpm", tmp_path / "folder" / "model", commits=(new, old))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    text = policy.read_text().replace("path: ./model", "path: acme/tiny-ddpm")
    hub_policy = write_policy(tmp_path / "folder" / "hub.naa.yaml", text)
    loaded = load_policy(hub_policy)
    assert loaded.model.path == tmp_path / "hub" / "models--acme--tiny-ddpm" / "snapshots" / new
    result = audit(loaded, progress=False)
    np.testing.assert_array_equal(result.attacks["loss"].member_scores, expected.member_scores)
    assert result.to_dict()["environment"]["model_path_snapshot"] == f"acme/tiny-ddpm@{new}"


def test_hf_home_is_the_cache_when_hf_hub_cache_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cache(tmp_path / "home" / "hub", "acme/m", FIXTURES / "overfit_digits" / "model")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    policy = write_policy(tmp_path / "p.naa.yaml", "version: 1\nname: p\nmodel: {path: acme/m}\ndata: {members: a.npz, nonmembers: b.npz}\n")
    assert load_policy(policy).model.path.parent.parent.name == "models--acme--m"


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("absent", r"not in the local Hugging Face cache: no snapshot under .*models--acme--gone.*never downloads.*hf download acme/gone"),
        ("ambiguous", r"holds 2 snapshots .*no refs/main"),
        ("dangling", r"refs/main names the snapshot .*not in"),
    ],
)
def test_a_hub_id_the_cache_cannot_answer_is_a_policy_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], layout: str, message: str) -> None:
    model = FIXTURES / "overfit_digits" / "model"
    if layout == "ambiguous":
        fake_cache(tmp_path / "hub", "acme/gone", model, commits=("1" * 40, "2" * 40), main=None)
    elif layout == "dangling":
        fake_cache(tmp_path / "hub", "acme/gone", model, main="3" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    policy = write_policy(tmp_path / "p.naa.yaml", "version: 1\nname: p\nmodel: {path: acme/gone}\ndata: {members: a.npz, nonmembers: b.npz}\n")
    with pytest.raises(PolicyError, match=message):
        load_policy(policy)
    assert main(["audit", str(policy)]) == 2
    assert "model.path" in capsys.readouterr().err


def test_a_local_folder_named_like_a_hub_id_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(FIXTURES / "overfit_digits" / "model", tmp_path / "acme" / "m")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    policy = write_policy(tmp_path / "p.naa.yaml", "version: 1\nname: p\nmodel: {path: acme/m}\ndata: {members: a.npz, nonmembers: b.npz}\n")
    assert load_policy(policy).model.path == (tmp_path / "acme" / "m").resolve()
    assert json.loads((tmp_path / "acme" / "m" / "model_index.json").read_text())


# ----------------------------------------------------------------------------- naa-guard init


def test_init_writes_single_file_config_and_dataset_split_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = pytest.importorskip("datasets")
    from test_hfdataset import split_dataset

    split_dataset().save_to_disk(str(tmp_path / "saved"))
    checkpoint = write_ldm_checkpoint(SD / "model", tmp_path / "sd.safetensors")
    config, out = configs_only(tmp_path), tmp_path / "out" / "sd.naa.yaml"
    saved = str(tmp_path / "saved")
    args = ["init", str(checkpoint), saved, saved, "-o", str(out)]
    assert main(args) == 2  # a single file without --config
    assert "give --config FOLDER" in capsys.readouterr().err
    assert main([*args, "--config", str(config)]) == 2  # one dataset for both sides and no split named
    assert "--members-split and --nonmembers-split" in capsys.readouterr().err
    assert main([*args, "--config", str(config), "--members-split", "train"]) == 2  # the non-members' split unnamed
    assert "2 splits (train, test)" in capsys.readouterr().err
    assert main([*args, "--config", str(config), "--members-split", "train", "--nonmembers-split", "test"]) == 0
    text = out.read_text()
    assert 'single_file: "../sd.safetensors"' in text and 'config: "../base"' in text
    assert 'split: {members: "train", nonmembers: "test"}' in text
    assert "conditioning: caption" in text and "split 'train'" in text
    policy = load_policy(out)
    assert policy.model.single_file == checkpoint and policy.data.split_for("nonmembers") == "test"
    assert datasets is not None


def test_init_resolves_a_cached_hub_id_and_writes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cache(tmp_path / "hub", "acme/digits", FIXTURES / "overfit_digits" / "model")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    digits = FIXTURES / "overfit_digits"
    assert main(["init", "acme/digits", str(digits / "members.npz"), str(digits / "nonmembers.npz"), "-o", "p.naa.yaml"]) == 0
    assert 'path: "acme/digits"' in (tmp_path / "p.naa.yaml").read_text()
    assert load_policy(tmp_path / "p.naa.yaml").model.path.name == "a1b2c3d4" * 5
    assert main(["init", "acme/missing", str(digits / "members.npz"), str(digits / "nonmembers.npz"), "-o", "q.naa.yaml"]) == 2
    assert "hf download acme/missing" in capsys.readouterr().err
