"""The bad-input matrix: every kind of broken policy, path, image, array, manifest, model folder
and runtime option gives a clear error (what, where, how to fix), never a verdict or a traceback.

Each row of ``CASES`` builds one broken setup in ``tmp_path`` and names the error type and the
key words its message must contain. Every row is run twice: through the library
(``load_policy`` + ``audit``) and through the command line (``naa-guard audit``, exit code 2,
the message on stderr, no traceback).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_images, make_tiny_model, write_policy
from PIL import Image

from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import (
    AuditInvalidError,
    DataError,
    EnvironmentUnavailableError,
    NaaGuardError,
    NonFiniteScoreError,
    PolicyError,
    TargetError,
)
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


def _edit_json(path: Path, **changes: Any) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


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
    _edit_json(copy / "model_index.json", vae=["diffusers", "AutoencoderKL"])
    return Setup(_policy(tmp, copy), {})


def bad_sample_size(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    _edit_json(copy / "unet" / "config.json", sample_size="large")
    return Setup(_policy(tmp, copy), {})


def no_weights(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    return Setup(_policy(tmp, copy), {})


def foreign_scheduler_class(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    _edit_json(copy / "scheduler" / "scheduler_config.json", _class_name="DiffusionPipeline")
    return Setup(_policy(tmp, copy), {})


def geometry_mismatch(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    _edit_json(copy / "unet" / "config.json", sample_size=7)  # two down blocks: 7 -> 4 -> 8 breaks the skips
    return Setup(_policy(tmp, copy), {})


def weights_config_mismatch(tmp: Path, model: Path) -> Setup:
    copy = _copy_model(tmp, model)
    _edit_json(copy / "unet" / "config.json", in_channels=3, out_channels=3)
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
