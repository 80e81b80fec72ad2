"""Model sources named by their own key, and read only where they say (issue 24, items 5 and 10).

The hub cache is read as huggingface_hub writes it (refs/main a commit hash, snapshots and their
links inside the repository's folder, a broken link named as an interrupted download); a missing
reference, a LoRA given as a single file, a refused pickle and a --cache that is a file each get
one message in naa-guard's own words.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, make_tiny_setup, write_policy
from ldm_layout import write_ldm_checkpoint
from test_model_sources import configs_only, fake_cache, sd_policy
from test_user_paths import needs_fifo, within

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import PolicyError, TargetError
from naa_guard.policy import load_policy
from naa_guard.targets import read_model_info

SD = FIXTURES / "tiny_sd"
DIGITS = FIXTURES / "overfit_digits" / "model"
HASH, OTHER = "a1b2c3d4" * 5, "0f" * 20


def hub_policy(tmp_path: Path, repo: str = "acme/m") -> Path:
    return write_policy(tmp_path / "p.naa.yaml", f"version: 1\nname: p\nmodel: {{path: {repo}}}\ndata: {{members: a.npz, nonmembers: b.npz}}\n")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Return a hub cache holding acme/m and acme/other (each one snapshot), set as HF_HUB_CACHE."""
    fake_cache(tmp_path / "hub", "acme/m", DIGITS, commits=(HASH,))
    fake_cache(tmp_path / "hub", "acme/other", DIGITS, commits=(OTHER,))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


# ----------------------------------------------------------------------------- the hub cache stays inside its repository


@pytest.mark.parametrize("ref", [f"../../models--acme--other/snapshots/{OTHER}", "main", HASH[:12], HASH.upper()])
def test_refs_main_must_hold_a_commit_hash(hub: Path, tmp_path: Path, ref: str) -> None:
    (hub / "models--acme--m" / "refs" / "main").write_text(ref)
    with pytest.raises(PolicyError, match=r"model\.path.*refs/main holds .*not a commit hash \(40 hex digits"):
        load_policy(hub_policy(tmp_path))


def test_a_snapshot_linked_to_another_repository_is_refused(hub: Path, tmp_path: Path) -> None:
    snapshots = hub / "models--acme--m" / "snapshots"
    shutil.rmtree(snapshots / HASH)
    (snapshots / HASH).symlink_to(hub / "models--acme--other" / "snapshots" / OTHER)
    with pytest.raises(PolicyError, match=r"resolves to .*models--acme--other.*outside the repository's cache folder"):
        load_policy(hub_policy(tmp_path))


def test_a_snapshot_file_linked_out_of_the_repository_is_refused(hub: Path, tmp_path: Path) -> None:
    config = hub / "models--acme--m" / "snapshots" / HASH / "unet" / "config.json"
    config.unlink()
    config.symlink_to(DIGITS / "unet" / "config.json")
    with pytest.raises(PolicyError, match=r"config\.json links to .*outside the cache folder"):
        load_policy(hub_policy(tmp_path))


def test_a_broken_blob_link_says_to_finish_the_download(hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = hub / "models--acme--m" / "snapshots" / HASH
    (snapshot / "unet" / "config.json").resolve().unlink()  # the blob of an interrupted download
    policy = hub_policy(tmp_path)
    with pytest.raises(PolicyError, match=r"config\.json is a broken link .*did not finish.*hf download acme/m"):
        load_policy(policy)
    assert main(["audit", str(policy)]) == 2
    assert "hf download acme/m" in capsys.readouterr().err
    # the same snapshot named by its folder: the model check says it too
    with pytest.raises(TargetError, match=r"model\.path .*config\.json is a broken link.*hf download acme/m"):
        read_model_info(snapshot)


@needs_fifo
def test_a_named_pipe_as_refs_main_is_an_error_not_a_hang(hub: Path, tmp_path: Path) -> None:
    ref = hub / "models--acme--m" / "refs" / "main"
    ref.unlink()
    os.mkfifo(ref)
    with pytest.raises(PolicyError, match=r"refs/main is a named pipe"):
        within(30, lambda: load_policy(hub_policy(tmp_path)))


@needs_fifo
def test_a_named_pipe_in_a_model_folder_is_refused_before_any_loader_opens_it(tmp_path: Path) -> None:
    model = shutil.copytree(SD / "model", tmp_path / "model")
    (model / "tokenizer" / "tokenizer.json").unlink()
    os.mkfifo(model / "tokenizer" / "tokenizer.json")  # transformers would block on it forever
    with pytest.raises(TargetError, match=r"tokenizer\.json is a named pipe, not a regular file"):
        within(30, lambda: read_model_info(model))


@needs_fifo
def test_a_named_pipe_as_a_json_config_is_refused(tmp_path: Path) -> None:
    from naa_guard.targets.modelcheck import read_json_object

    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(TargetError, match="is a named pipe"):
        within(30, lambda: read_json_object(tmp_path / "config.json"))


# ----------------------------------------------------------------------------- each model key speaks for itself


def test_a_missing_reference_is_reported_as_model_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = make_tiny_setup(tmp_path, attacks="{loss: {}}")
    policy.write_text(policy.read_text().replace("model: {path: ./model}", "model: {path: ./model, reference: ./base}"))
    assert main(["audit", str(policy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.reference" in err and "base" in err and "model.path" not in err, err
    with pytest.raises(TargetError, match=r"^model\.reference .*base does not exist"):
        audit(load_policy(policy), progress=False)


def test_a_lora_given_as_single_file_is_named_as_a_lora(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32), "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}, lora)
    with pytest.raises(TargetError, match=r"model\.single_file .*lora\.safetensors: this is a LoRA adapter .*model\.lora"):
        audit(load_policy(sd_policy(tmp_path, f"single_file: {lora}, config: {configs_only(tmp_path)}")), progress=False)


def test_a_refused_pickle_single_file_gives_naa_guards_rule_not_torchs_advice(tmp_path: Path) -> None:
    checkpoint = write_ldm_checkpoint(SD / "model", tmp_path / "sd.ckpt")
    state = torch.load(checkpoint, weights_only=True)
    torch.save({"state_dict": state, "callbacks": {"trainer": Path("x")}}, checkpoint)  # a non-tensor object, as lightning checkpoints carry
    with pytest.raises(TargetError) as caught:
        audit(load_policy(sd_policy(tmp_path, f"single_file: {checkpoint}, config: {configs_only(tmp_path)}, allow_pickle: true")), progress=False)
    message = str(caught.value)
    assert message.startswith("model.single_file ") and "safetensors" in message and "model.allow_pickle: true" in message
    assert "weights_only=False" not in message and "will likely succeed" not in message and "add_safe_globals" not in message


def test_a_cache_path_that_is_a_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = make_tiny_setup(tmp_path, attacks="{loss: {}}")
    (tmp_path / "afile").write_text("")
    for cache in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["audit", str(policy), "--quiet", "--cache", str(cache)]) == 2
        out, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and "--cache" in err and str(cache) in err and "folder" in err, err
        assert "verdict" not in out


@needs_fifo
def test_a_named_pipe_as_model_lora_is_named_as_one(tmp_path: Path) -> None:
    from naa_guard.targets.latent_info import find_lora

    os.mkfifo(tmp_path / "lora.safetensors")
    with pytest.raises(TargetError, match=r"model\.lora .*lora\.safetensors is a named pipe"):
        within(30, lambda: find_lora(tmp_path / "lora.safetensors"))
