"""The bad-input matrix: every kind of broken policy, path, image, array, manifest, model folder
and runtime option gives a clear error (what, where, how to fix), never a verdict or a traceback.

Each row of ``CASES`` builds one broken setup in ``tmp_path`` and names the error type and the
key words its message must contain. Every row is run twice: through the library
(``load_policy`` + ``audit``) and through the command line (``naa-guard audit``, exit code 2,
the message on stderr, no traceback).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import edit_json, make_images, make_tiny_model, write_policy
from PIL import Image

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import AuditInvalidError, DataError, EnvironmentUnavailableError, InsufficientSamplesError, NaaGuardError, NonFiniteScoreError, PolicyError, TargetError
from naa_guard.policy import load_policy

# ----------------------------------------------------------------------------- builders


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return one tiny random diffusers folder shared by the module (copied before mutating)."""
    return make_tiny_model(tmp_path_factory.mktemp("model") / "model")


@dataclass
class Setup:
    """What a case builds: the policy file and the runtime overrides (API kwargs / CLI flags)."""

    policy: Path
    overrides: dict[str, Any]


def _policy(tmp: Path, model: Path, *, model_yaml: str | None = None, members: str = "./members.npz",
            nonmembers: str = "./nonmembers.npz", control: str | None = None, attacks: str = "{naa: {t: 40, queries: 3}}",
            extra: str = "", runtime: str = "{device: cpu, batch_size: 16}") -> Path:  # fmt: skip
    """Write a policy over ``model`` and 24 + 24 random images (unless the case replaces them)."""
    if not (tmp / "members.npz").exists():
        make_images(tmp / "members.npz", 24, seed=1)
        make_images(tmp / "nonmembers.npz", 24, seed=2)
    body = (
        "version: 1\nname: bad\n"
        f"model: {model_yaml or '{path: ' + str(model) + '}'}\n"
        f"data: {{members: {members}, nonmembers: {nonmembers}{', control: ' + control if control else ''}}}\n"
        f"attacks: {attacks}\n"
        "thresholds: {auc: 0.99, tpr_at_1pct_fpr: null}\n"
        f"runtime: {runtime}\n{extra}"
    )
    return write_policy(tmp / "bad.naa.yaml", body)


def _copy_model(tmp: Path, model: Path) -> Path:
    return Path(shutil.copytree(model, tmp / "model"))


def _raw(text: str) -> Callable[[Path, Path], Setup]:
    def build(tmp: Path, model: Path) -> Setup:
        return Setup(write_policy(tmp / "bad.naa.yaml", text.replace("MODEL", str(model))), {})

    return build


def _with(overrides: dict[str, Any] | None = None, **policy_args: Any) -> Callable[[Path, Path], Setup]:
    def build(tmp: Path, model: Path) -> Setup:
        return Setup(_policy(tmp, model, **policy_args), overrides or {})

    return build


def no_policy_file(tmp: Path, model: Path) -> Setup:
    return Setup(tmp / "missing.naa.yaml", {})


def empty_folder(tmp: Path, model: Path) -> Setup:
    (tmp / "train").mkdir()
    return Setup(_policy(tmp, model, members="./train"), {})


def corrupt_image(tmp: Path, model: Path) -> Setup:
    (tmp / "train").mkdir()
    Image.new("L", (8, 8), 30).save(tmp / "train" / "a.png")
    (tmp / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return Setup(_policy(tmp, model, members="./train"), {})


def sixteen_bit_image(tmp: Path, model: Path) -> Setup:
    (tmp / "train").mkdir()
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp / "train" / "deep.png")
    return Setup(_policy(tmp, model, members="./train"), {})


def wrong_rank(tmp: Path, model: Path) -> Setup:
    np.savez(tmp / "flat.npz", images=np.zeros((10, 64), dtype=np.uint8))
    return Setup(_policy(tmp, model, members="./flat.npz"), {})


def float_out_of_range(tmp: Path, model: Path) -> Setup:
    np.save(tmp / "wide.npy", np.full((4, 1, 8, 8), 200.0, dtype=np.float32))
    return Setup(_policy(tmp, model, nonmembers="./wide.npy"), {})


def npz_without_images_key(tmp: Path, model: Path) -> Setup:
    np.savez(tmp / "two.npz", train=np.zeros((2, 8, 8), np.uint8), test=np.zeros((2, 8, 8), np.uint8))
    return Setup(_policy(tmp, model, members="./two.npz"), {})


def manifest_outside(tmp: Path, model: Path) -> Setup:
    Image.new("L", (8, 8), 30).save(tmp / "secret.png")
    (tmp / "sets").mkdir()
    (tmp / "sets" / "train.csv").write_text("path,caption\n../secret.png,a digit\n")
    return Setup(_policy(tmp, model, members="./sets/train.csv"), {})


def manifest_without_path_column(tmp: Path, model: Path) -> Setup:
    (tmp / "train.csv").write_text("file,caption\na.png,a digit\n")
    return Setup(_policy(tmp, model, members="./train.csv"), {})


def manifest_missing_file(tmp: Path, model: Path) -> Setup:
    (tmp / "train.jsonl").write_text('{"path": "gone.png"}\n')
    return Setup(_policy(tmp, model, members="./train.jsonl"), {})


def unsupported_source(tmp: Path, model: Path) -> Setup:
    (tmp / "members.txt").write_text("not images\n")
    return Setup(_policy(tmp, model, members="./members.txt"), {})


def missing_scheduler(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    shutil.rmtree(copy / "scheduler")
    return Setup(_policy(tmp, copy), {})


def pickle_weights(tmp: Path, model: Path) -> Setup:
    from diffusers import UNet2DModel

    copy = _copy_model(tmp, model)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    UNet2DModel.from_pretrained(model / "unet").save_pretrained(copy / "unet", safe_serialization=False)
    return Setup(_policy(tmp, copy), {})


def latent_pipeline(tmp: Path, model: Path) -> Setup:
    """A model_index.json that names a VAE over a folder that has none: an incomplete latent pipeline."""
    copy = _copy_model(tmp, model)
    edit_json(copy / "model_index.json", vae=["diffusers", "AutoencoderKL"])
    return Setup(_policy(tmp, copy), {})


def bad_sample_size(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    edit_json(copy / "unet" / "config.json", sample_size="large")
    return Setup(_policy(tmp, copy), {})


def no_weights(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return Setup(_policy(tmp, copy), {})


def foreign_scheduler_class(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    edit_json(copy / "scheduler" / "scheduler_config.json", _class_name="DiffusionPipeline")
    return Setup(_policy(tmp, copy), {})


def geometry_mismatch(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    make_images(tmp / "members.npz", 24, size=7, seed=1)  # images of the declared size: the probe must catch it
    make_images(tmp / "nonmembers.npz", 24, size=7, seed=2)
    edit_json(copy / "unet" / "config.json", sample_size=7)  # two down blocks: 7 -> 4 -> 8 breaks the skips
    return Setup(_policy(tmp, copy), {})


def weights_config_mismatch(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    edit_json(copy / "unet" / "config.json", in_channels=3, out_channels=3)
    return Setup(_policy(tmp, copy), {})


def nan_weights(tmp: Path, model: Path) -> Setup:
    import torch
    from diffusers import UNet2DModel

    copy = _copy_model(tmp, model)
    unet = UNet2DModel.from_pretrained(model / "unet")
    with torch.no_grad():
        unet.conv_out.weight.fill_(float("nan"))
    unet.save_pretrained(copy / "unet", safe_serialization=True)
    return Setup(_policy(tmp, copy), {})


def overlapping_sets(tmp: Path, model: Path) -> Setup:
    make_images(tmp / "members.npz", 24, seed=1)
    images = np.load(tmp / "members.npz")["images"]
    held_out = np.load(make_images(tmp / "other.npz", 24, seed=2))["images"]
    held_out[[3, 7]] = images[[5, 9]]
    np.savez(tmp / "nonmembers.npz", images=held_out)
    return Setup(_policy(tmp, model), {})


def shifted_sets(tmp: Path, model: Path) -> Setup:
    rng = np.random.default_rng(0)
    np.savez(tmp / "members.npz", images=rng.integers(60, 256, (24, 8, 8), dtype=np.uint8))
    np.savez(tmp / "nonmembers.npz", images=rng.integers(0, 196, (24, 8, 8), dtype=np.uint8))
    return Setup(_policy(tmp, model), {})


def loader_module_missing(tmp: Path, model: Path) -> Setup:
    return Setup(_policy(tmp, model, model_yaml="{loader: 'naa_guard_no_such_module.models:load'}"), {})


def loader_wrong_return(tmp: Path, model: Path) -> Setup:
    # dict(path=..., device=..., dtype=...) imports and runs fine but returns no Target.
    return Setup(_policy(tmp, model, model_yaml="{loader: 'builtins:dict'}"), {})


# --- issue 8: inputs that once gave a verdict (a false PASS, a traceback or a hang) --------------


def _header(model: Path) -> str:
    return f"version: 1\nname: bad\nmodel: {{path: {model}}}\ndata: {{members: ./members.npz, nonmembers: ./nonmembers.npz}}\n"


def duplicate_key(tmp: Path, model: Path) -> Setup:
    return Setup(_policy(tmp, model, extra="thresholds: {auc: 0.6}\n"), {})


def alias_bomb(tmp: Path, model: Path) -> Setup:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return Setup(write_policy(tmp / "bad.naa.yaml", _header(model) + "\n".join(lines) + "\n"), {})


def empty_env_variable(tmp: Path, model: Path) -> Setup:
    os.environ["NAA_GUARD_TEST_EMPTY"] = ""  # set, but to nothing: would turn the path into the policy's folder
    return Setup(_policy(tmp, model, members="'${NAA_GUARD_TEST_EMPTY}'"), {})


def one_member(tmp: Path, model: Path) -> Setup:
    make_images(tmp / "members.npz", 1, seed=1)
    make_images(tmp / "nonmembers.npz", 24, seed=2)
    return Setup(_policy(tmp, model), {})


def small_control(tmp: Path, model: Path) -> Setup:
    make_images(tmp / "control.npz", 5, seed=3)
    return Setup(_policy(tmp, model, control="./control.npz"), {})


def tuning_split_leaves_999(tmp: Path, model: Path) -> Setup:
    make_images(tmp / "members.npz", 60, seed=1)
    make_images(tmp / "nonmembers.npz", 1000, seed=2)
    body = _header(model) + "attacks: {loss: {t: [10, 100]}}\nthresholds: {auc: 0.99, tpr_at_1pct_fpr: 0.05}\nruntime: {device: cpu}\n"
    return Setup(write_policy(tmp / "bad.naa.yaml", body), {})


def _copy_edit(tmp: Path, model: Path, config: str, **changes: Any) -> Setup:
    copy = _copy_model(tmp, model)
    edit_json(copy / config, **changes)
    return Setup(_policy(tmp, copy), {})


def _copy_rewrite_weights(tmp: Path, model: Path, change: Callable[[dict[str, Any]], Any]) -> Setup:
    from safetensors.torch import load_file, save_file

    copy = _copy_model(tmp, model)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    change(tensors)
    save_file(tensors, weights)
    return Setup(_policy(tmp, copy), {})


def missing_tensor(tmp: Path, model: Path) -> Setup:
    return _copy_rewrite_weights(tmp, model, lambda tensors: tensors.pop("conv_out.bias"))


def unexpected_tensor(tmp: Path, model: Path) -> Setup:
    import torch

    return _copy_rewrite_weights(tmp, model, lambda tensors: tensors.update(extra=torch.ones(2)))


def truncated_weights(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return Setup(_policy(tmp, copy), {})


def config_is_a_list(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    (copy / "scheduler" / "scheduler_config.json").write_text("[]")
    return Setup(_policy(tmp, copy), {})


def images_of_another_size(tmp: Path, model: Path) -> Setup:
    make_images(tmp / "members.npz", 24, size=6, seed=1)  # e.g. 28x28 digits for a model trained on them padded to 32x32
    make_images(tmp / "nonmembers.npz", 24, size=6, seed=2)
    return Setup(_policy(tmp, model), {})


def png_renamed_npz(tmp: Path, model: Path) -> Setup:
    Image.new("L", (8, 8), 30).save(tmp / "png.png")
    (tmp / "png.png").rename(tmp / "members_png.npz")
    return Setup(_policy(tmp, model, members="./members_png.npz"), {})


def fifo_source(tmp: Path, model: Path) -> Setup:
    os.mkfifo(tmp / "pipe.npz")
    return Setup(_policy(tmp, model, members="./pipe.npz"), {})


def policy_is_a_fifo(tmp: Path, model: Path) -> Setup:
    os.mkfifo(tmp / "bad.naa.yaml")
    return Setup(tmp / "bad.naa.yaml", {})


# ----------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, the error it must raise and the words its message needs."""

    build: Callable[[Path, Path], Setup]
    error: type[NaaGuardError]
    words: tuple[str, ...]
    cli_words: tuple[str, ...] | None = None  # when the CLI catches it itself, with its own words


def case(id: str, build: Callable[[Path, Path], Setup], error: type[NaaGuardError], *words: str, cli: tuple[str, ...] | None = None) -> Any:
    return pytest.param(Case(build, error, words, cli), id=id)


CASES = [
    # --- policy files ---------------------------------------------------------------------------------------------
    case("policy-missing", no_policy_file, PolicyError, "missing.naa.yaml", "policy file not found", "naa-guard demo"),
    case("policy-bad-yaml", _raw("version: 1\nname: [oops\n"), PolicyError, "bad.naa.yaml", "not valid YAML", "Fix the syntax"),
    case("policy-not-mapping", _raw("- one\n- two\n"), PolicyError, "must be a YAML mapping", "found list"),
    case("policy-unknown-key", _with(extra="colour: red\n"), PolicyError, "colour: unknown key", "allowed keys here", "naa-guard schema"),
    case("unknown-attack", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nattacks: {fgsm: {}}\n"),
         PolicyError, "attacks.fgsm", "unknown attack", "known attacks: loss, naa, pia, pian, secmi"),  # fmt: skip
    case("unknown-metric", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nthresholds: {tpr_at_5pct_fpr: 0.1}\n"),
         PolicyError, "thresholds.tpr_at_5pct_fpr", "unknown key", "tpr_at_1pct_fpr"),  # fmt: skip
    case("attack-chain-below-zero", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nattacks: {naa: {t: 20}}\n"),
         PolicyError, "attacks.naa", "smallest valid t is 40", "raise t"),  # fmt: skip
    case("model-without-path-or-loader", _with(model_yaml="{allow_pickle: false}"), PolicyError, "model:", "give model.path", "model.loader"),
    case("env-variable-unset", _with(members="'${NAA_GUARD_TEST_UNSET}/m.npz'"), PolicyError, "data.members", "${NAA_GUARD_TEST_UNSET} is not set"),
    case("loader-bad-format", _with(model_yaml="{loader: 'my models/load.py'}"), PolicyError, "model.loader", "package.module:function"),
    case("batch-size-0-in-policy", _with(runtime="{device: cpu, batch_size: 0}"), PolicyError, "runtime.batch_size", "greater than or equal to 1"),
    case("shift-limit-out-of-range", _with(extra="checks: {shift_auc: 0.3}\n"), PolicyError, "checks.shift_auc", "greater than or equal to 0.5"),
    # --- paths, images, arrays, manifests -------------------------------------------------------------------------
    case("members-path-missing", _with(members="./nowhere.npz"), DataError, "members source", "nowhere.npz", "does not exist", "Fix"),
    case("control-path-missing", _with(control="./unseen.npz"), DataError, "control source", "unseen.npz", "does not exist"),
    case("empty-folder", empty_folder, DataError, "members folder", "contains no images", "Fix"),
    case("unreadable-image", corrupt_image, DataError, "Cannot decode image", "b.png", "re-export or remove"),
    case("16-bit-image", sixteen_bit_image, DataError, "deep.png", "high-bit-depth", "8-bit"),
    case("wrong-array-rank", wrong_rank, DataError, "flat.npz", "shape (10, 64)", "N,H,W"),
    case("float-array-out-of-range", float_out_of_range, DataError, "wide.npy", "expected [0, 1]", "rescale"),
    case("npz-without-images-key", npz_without_images_key, DataError, "two.npz", "none is named 'images'", "np.savez(path, images=x)"),
    case("manifest-points-outside", manifest_outside, DataError, "train.csv", "outside the manifest's folder", "Fix"),
    case("manifest-without-path-column", manifest_without_path_column, DataError, "no 'path' column", "Fix"),
    case("manifest-missing-file", manifest_missing_file, DataError, "Line 1", "gone.png", "no file exists"),
    case("unsupported-source", unsupported_source, DataError, "members.txt", "unsupported form '.txt'", "Supported"),
    # --- model folders and loaders --------------------------------------------------------------------------------
    case("model-folder-missing", _with(model_yaml="{path: ./no_model}"), TargetError, "no_model", "does not exist", "model.path"),
    case("missing-scheduler", missing_scheduler, TargetError, "missing subfolder scheduler/", "save_pretrained"),
    case("pickle-weights-refused", pickle_weights, TargetError, "diffusion_pytorch_model.bin", "arbitrary code", "allow_pickle: true"),
    case("latent-pipeline", latent_pipeline, TargetError, "latent text-to-image pipeline is missing vae/", "save the whole pipeline"),
    case("bad-sample-size", bad_sample_size, TargetError, "config.json", "sample_size is 'large'", "positive int"),
    case("no-weights", no_weights, TargetError, "no weights found", "save_pretrained"),
    case("foreign-scheduler-class", foreign_scheduler_class, TargetError, "'DiffusionPipeline' is not a diffusers scheduler", "model.loader"),
    case("unet-geometry-mismatch", geometry_mismatch, TargetError, "cannot take images of its declared geometry", "sample_size 7", "Fix the UNet config"),
    case("weights-config-mismatch", weights_config_mismatch, TargetError, "size mismatch for conv_in.weight", "in_channels 3", "re-save"),
    case("timestep-beyond-schedule", _with(attacks="{naa: {t: 1500}}"), TargetError, "timestep 1500", "only 1000 timesteps", "Lower the attack's timestep"),
    case("loader-module-missing", loader_module_missing, TargetError, "naa_guard_no_such_module", "cannot import module", "PYTHONPATH"),
    case("loader-wrong-return", loader_wrong_return, TargetError, "builtins:dict", "without alphas_cumprod", "predict_noise"),
    # --- runtime options ------------------------------------------------------------------------------------------
    case("device-cuda-unavailable", _with(runtime="{device: cuda}"), EnvironmentUnavailableError, "'cuda'", "no CUDA device", "device: auto"),
    case("batch-size-0-override", _with({"batch_size": 0}), PolicyError, "runtime.batch_size = 0", "--batch-size", cli=("--batch-size must be at least 1",)),
    case("unknown-device-override", _with({"device": "tpu"}), PolicyError, "runtime.device = 'tpu'", "allowed: auto, cpu"),
    case("limit-0-override", _with({"limit": 0}), DataError, "limit for the members set", "positive integer", cli=("--limit must be at least 1",)),
    # --- audit validity -------------------------------------------------------------------------------------------
    case("members-nonmembers-overlap", overlapping_sets, AuditInvalidError, "2 image(s) appear in both", "members.npz[5] = nonmembers.npz[3]", "remove the duplicates"),
    case("shifted-sets", shifted_sets, AuditInvalidError, "different distributions", "checks.shift_auc", "same source"),
    case("nan-predictions", nan_weights, NonFiniteScoreError, "attack naa", "members sample(s) members.npz[0]", "NaN", "runtime.dtype"),
    # --- issue 8, class 1: policy YAML that once passed -----------------------------------------------------------
    case("duplicate-key", duplicate_key, PolicyError, "bad.naa.yaml", "duplicate key 'thresholds'", "first given at line"),
    case("alias-bomb", alias_bomb, PolicyError, "bad.naa.yaml", "aliases"),
    case("threshold-yes", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nthresholds: {auc: yes}\n"),
         PolicyError, "thresholds.auc", "valid number", "True"),  # fmt: skip
    case("threshold-string", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nthresholds: {auc: '0.6'}\n"),
         PolicyError, "thresholds.auc", "valid number", "'0.6'"),  # fmt: skip
    case("every-gate-null", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nthresholds: {auc: null, tpr_at_1pct_fpr: null}\n"),
         PolicyError, "thresholds", "every gate is disabled"),  # fmt: skip
    case("thresholds-empty", _raw("version: 1\nmodel: {path: MODEL}\ndata: {members: a.npz, nonmembers: b.npz}\nthresholds: {}\n"),
         PolicyError, "thresholds", "empty thresholds section"),  # fmt: skip
    case("env-variable-empty", empty_env_variable, PolicyError, "data.members", "${NAA_GUARD_TEST_EMPTY} is set to an empty string"),
    # --- class 2: too few samples ----------------------------------------------------------------------------------
    case("one-member", one_member, InsufficientSamplesError, "1 members / 24 non-members", "at least 20 of each"),
    case("limit-2-override", _with({"limit": 2}), InsufficientSamplesError, "2 members / 2 non-members", "at least 20"),
    case("control-of-5", small_control, InsufficientSamplesError, "data.control holds 5 image(s)", "at least 20"),
    # --- class 3: model configs and weights ------------------------------------------------------------------------
    case("betas-above-1", lambda tmp, model: _copy_edit(tmp, model, "scheduler/scheduler_config.json", beta_end=1.5),
         TargetError, "scheduler_config.json", "beta_end is 1.5", "(0, 1)"),  # fmt: skip
    case("weights-missing-a-tensor", missing_tensor, TargetError, "missing from the weights: conv_out.bias", "strictly"),
    case("weights-with-an-extra-tensor", unexpected_tensor, TargetError, "unexpected tensor(s)", "extra"),
    case("model-index-unknown-class", lambda tmp, model: _copy_edit(tmp, model, "model_index.json", unet=["diffusers", "NoSuchUNet"]),
         TargetError, "model_index.json", "diffusers.NoSuchUNet, which does not exist"),  # fmt: skip
    case("config-is-a-list", config_is_a_list, TargetError, "scheduler_config.json", "expected a JSON object", "array"),
    case("truncated-safetensors", truncated_weights, TargetError, "diffusion_pytorch_model.safetensors", "corrupt", "truncated"),
    # Weights trained at 8 under a config saying 16: the same tensors (no positional layers), so the
    # strict load cannot tell; the images stored at the training size can, and are not resized silently.
    case("config-sample-size-doubled", lambda tmp, model: _copy_edit(tmp, model, "unet/config.json", sample_size=16),
         DataError, "is 8x8 pixels, but the model takes 16x16", "does not resize silently"),  # fmt: skip
    case("unet-config-bool", lambda tmp, model: _copy_edit(tmp, model, "unet/config.json", in_channels=True),
         TargetError, "config.json", "in_channels is True"),  # fmt: skip
    # --- class 4: preprocessing -----------------------------------------------------------------------------------
    case("images-of-another-size", images_of_another_size, DataError, "is 6x6 pixels", "model takes 8x8", "data.fit"),
    case("data-fit-unknown", _with(members="./members.npz, fit: stretch"), PolicyError, "data.fit", "'resize', 'center_crop' or 'pad'"),
    # --- class 6: tuning split and the TPR resolution rule ----------------------------------------------------------
    case("tuning-split-unresolvable-tpr", tuning_split_leaves_999, PolicyError, "tune.fraction 0.2", "800 non-members", "at least 1000", "1250"),
    # --- class 7: files -------------------------------------------------------------------------------------------
    case("png-renamed-npz", png_renamed_npz, DataError, "members_png.npz", "is a PNG image", "np.savez"),
    case("fifo-as-source", fifo_source, DataError, "pipe.npz", "neither a folder nor a regular file"),
    case("policy-is-a-fifo", policy_is_a_fifo, PolicyError, "bad.naa.yaml", "not a regular file"),
]


@pytest.mark.parametrize("bad", CASES)
def test_library_raises_a_clear_error(bad: Case, tmp_path: Path, tiny_model: Path) -> None:
    """The library raises the case's error type, with what / where / how-to-fix words."""
    setup = bad.build(tmp_path, tiny_model)
    with pytest.raises(NaaGuardError) as caught:
        audit(load_policy(setup.policy), progress=False, **setup.overrides)
    assert type(caught.value) is bad.error, f"{type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    missing = [word for word in bad.words if word not in message]
    assert not missing, f"message lacks {missing}: {message}"
    assert "allow_pickle=True" not in message  # never advise unsafe loading


@pytest.mark.parametrize("bad", CASES)
def test_cli_exits_2_with_the_message_and_no_traceback(bad: Case, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``naa-guard audit`` exits 2, prints the message on stderr and no traceback or verdict."""
    setup = bad.build(tmp_path, tiny_model)
    flags = [arg for name, value in setup.overrides.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    code = main(["audit", str(setup.policy), "--quiet", *flags])
    out, err = capsys.readouterr()
    assert code == 2
    expected = bad.cli_words or (f"{bad.error.__name__}:", *bad.words)
    missing = [word for word in expected if word not in err]
    assert not missing, f"stderr lacks {missing}: {err}"
    assert "Traceback" not in err and "verdict" not in out


def test_the_matrix_covers_at_least_20_distinct_cases() -> None:
    """The issue asks for 20 or more distinct bad inputs across every input kind."""
    ids = [param.id for param in CASES]
    assert len(ids) == len(set(ids)) >= 20
    assert {param.values[0].error for param in CASES} >= {PolicyError, DataError, TargetError, EnvironmentUnavailableError, AuditInvalidError}


pytest_plugins = ["pytester"]

PLUGIN_FLAGS = {"device": "--naa-device", "batch_size": "--naa-batch-size", "limit": "--naa-quick"}


@pytest.mark.parametrize("bad", CASES)
def test_pytest_plugin_reports_an_error_never_a_pass(bad: Case, tmp_path: Path, tiny_model: Path, pytester: pytest.Pytester) -> None:
    """Through the pytest plugin the case is a collection, usage or item error: no pass, no traceback.

    ``--naa-strict`` makes the missing-device skip an error, as a release gate would run it.
    """
    # The library test above has imported torch, diffusers and scikit-learn in this process, so
    # pytester's in-process run does not import (and later unload) their extension modules.
    setup = bad.build(tmp_path, tiny_model)
    flags = [arg for name, value in setup.overrides.items() for arg in (PLUGIN_FLAGS[name], str(value))]
    result = pytester.runpytest("--naa-policy", str(setup.policy), "--naa-strict", "-p", "no:cacheprovider", *flags)
    output = result.stdout.str() + result.stderr.str()
    outcomes = result.parseoutcomes() if result.ret not in (pytest.ExitCode.USAGE_ERROR,) else {}
    assert result.ret in (pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR), output
    assert not outcomes.get("passed") and not outcomes.get("failed"), output
    assert outcomes.get("errors") or outcomes.get("error") or result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output and "pytest_plugin/" not in output, output
    # A bad option or a missing file is pytest's usage error, which names the option or the file;
    # otherwise the output carries the case's own words.
    if result.ret == pytest.ExitCode.USAGE_ERROR:
        expected = [PLUGIN_FLAGS[name] for name in setup.overrides] or [setup.policy.name]
    else:
        expected = list(bad.words[:1])
    assert expected and all(word in output for word in expected), output
