"""Issue 8: no input, cache entry or config may turn a leaking model into a PASS.

One test (or more) per class of the issue that the bad-input matrix (tests/test_bad_input.py)
cannot express as "this input is an error": cache entries (class 5), gates and metrics (6),
output files, pipes, symlinks and ``--naa-policy DIR`` (7), import order (8). Every test here
failed on main at 1d41e36.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_images, make_tiny_setup
from fakes import DictCache

from naa_guard.attacks.naa import aggregate
from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.policy import load_policy
from naa_guard.samples import load_samples
from naa_guard.scoring.keys import cache_key
from naa_guard.verdict.gates import evaluate_gates
from naa_guard.verdict.leakage import LeakageReport, MetricValue

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
CODE = Path(importlib.import_module("naa_guard").__file__).resolve().parents[1]  # the checkout under test

# ----------------------------------------------------------------------------- class 5: the score cache


@pytest.fixture
def loss_setup(tmp_path: Path) -> Path:
    """A tiny setup scored by the one-query loss attack: the cache tests audit twice, cheaply."""
    return make_tiny_setup(tmp_path, attacks="{loss: {}}")


def resealed(entry: dict[str, np.ndarray], secret: bytes | None = b"", **changes: np.ndarray) -> dict[str, np.ndarray]:
    """Return a score-cache entry with ``changes``, its digest recomputed under ``secret`` (b"": the suite's cache secret; None: a plain sha256)."""
    from naa_guard.scoring.cachesecret import cache_secret
    from naa_guard.scoring.keyedfiles import seal

    material = json.loads(str(entry["header"]))["key"]
    arrays = {name: value for name, value in entry.items() if name not in ("header", "digest")} | changes
    return seal(material, arrays, secret=cache_secret() if secret == b"" else secret)


@pytest.mark.parametrize("forger", ["digest left as it was", "plain sha256 digest recomputed", "HMAC under another secret"])
def test_a_cache_entry_edited_to_the_nonmembers_scores_is_recomputed_with_a_warning(loss_setup: Path, forger: str) -> None:
    """Members' scores replaced by the non-members': once "AUC 0.500, PASS" with no warning. A forger without
    the cache secret cannot write an entry that is used, whatever digest it computes."""
    cache = DictCache()
    honest = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    (key,) = cache.entries
    entry = cache.entries[key]
    forged = {"members": np.array(entry["nonmembers"])}
    if forger == "digest left as it was":
        cache.entries[key] = {**entry, **forged}
    else:
        cache.entries[key] = resealed(entry, None if forger == "plain sha256 digest recomputed" else b"another secret", **forged)
    again = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    assert again.model_loaded and not again.attacks["loss"].cached
    np.testing.assert_array_equal(again.attacks["loss"].member_scores, honest.attacks["loss"].member_scores)  # same process, same arithmetic
    assert any("was ignored and recomputed: its integrity digest does not match" in warning for warning in again.warnings), again.warnings


def test_a_cache_entry_of_other_inputs_under_this_key_is_recomputed_with_a_warning(loss_setup: Path) -> None:
    """An entry sealed (under the secret) for other key material, stored under this key: the name alone is never trusted."""
    cache = DictCache()
    honest = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    (key,) = cache.entries
    from naa_guard.scoring.cachesecret import cache_secret
    from naa_guard.scoring.keyedfiles import seal

    entry = cache.entries[key]
    material = json.loads(str(entry["header"]))["key"] | {"seed": 1}
    cache.entries[key] = seal(material, {name: value for name, value in entry.items() if name not in ("header", "digest")} | {"members": entry["nonmembers"]}, secret=cache_secret())
    again = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    assert not again.attacks["loss"].cached
    np.testing.assert_array_equal(again.attacks["loss"].member_scores, honest.attacks["loss"].member_scores)
    assert any("its stored key differs from the expected one" in warning for warning in again.warnings), again.warnings


def test_a_cache_entry_with_the_wrong_counts_is_recomputed_with_a_warning(loss_setup: Path) -> None:
    cache = DictCache()
    honest = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    (key,) = cache.entries
    # One member and one non-member: once gave "AUC 0.500, PASS" under "24 members / 24 non-members".
    cache.entries[key] = {"members": np.array([0.0]), "nonmembers": np.array([0.0])}
    again = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    assert again.model_loaded and not again.attacks["loss"].cached
    np.testing.assert_array_equal(again.attacks["loss"].member_scores, honest.attacks["loss"].member_scores)
    assert any("was ignored and recomputed" in warning for warning in again.warnings)


def test_a_cache_entry_holding_nan_is_recomputed_not_fatal(loss_setup: Path) -> None:
    cache = DictCache()
    audit(load_policy(loss_setup), progress=False, score_cache=cache)
    (key,) = cache.entries
    # written so by naa-guard itself (a bug, not an edit): sealed under its key material and the cache secret
    cache.entries[key] = resealed(cache.entries[key], members=np.full(24, np.nan))
    again = audit(load_policy(loss_setup), progress=False, score_cache=cache)
    assert np.isfinite(again.attacks["loss"].member_scores).all()
    assert any("non-finite members score" in warning for warning in again.warnings)


def test_changing_an_attacks_code_changes_its_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key holds a hash of the attack's implementation, not only the package version."""
    module = tmp_path / "edited_attack.py"
    source = "from naa_guard.attacks.loss import LossAttack\n\nclass Edited(LossAttack):\n    pass\n"
    module.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = load_policy(make_tiny_setup(tmp_path))
    members = load_samples(policy.data.members, size=8, channels=1, role="members")
    nonmembers = load_samples(policy.data.nonmembers, size=8, channels=1, role="nonmembers")
    from naa_guard.targets import read_model_info

    info = read_model_info(policy.model.path)
    first = cache_key(info, policy, importlib.import_module("edited_attack").Edited(), members, nonmembers, None)
    module.write_text(source + "\n# a fix to the scoring formula\n")
    second = cache_key(info, policy, importlib.reload(importlib.import_module("edited_attack")).Edited(), members, nonmembers, None)
    assert first != second


def test_a_cache_that_cannot_be_written_costs_time_never_the_verdict(loss_setup: Path) -> None:
    class ReadOnlyCache(DictCache):
        def put(self, key: str, scores: dict[str, np.ndarray]) -> None:
            raise PermissionError(13, "Permission denied", "/read-only/cache")

    result = audit(load_policy(loss_setup), progress=False, score_cache=ReadOnlyCache())
    assert result.gates and all(gate.status in ("pass", "fail") for gate in result.gates)
    assert any("could not write the score cache" in warning for warning in result.warnings)


# ----------------------------------------------------------------------------- class 6: metrics and gates


def _leakage(value: float, n: int = 24) -> LeakageReport:
    metric = MetricValue(value=value, ci=(value, value), direction="members_higher")
    metrics = {name: metric for name in ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "asr")}
    return LeakageReport(auc=value, leak_auc=value, direction="members_higher", n_members=n, n_nonmembers=n, confidence=0.95, metrics=metrics)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_an_error_never_a_pass(tiny_setup: Path, value: float) -> None:
    (gate,) = evaluate_gates(load_policy(tiny_setup), "naa", _leakage(value))
    assert gate.status == "error" and "not a finite number" in gate.message


def test_a_gate_on_fewer_than_20_per_side_is_an_error(tiny_setup: Path) -> None:
    (gate,) = evaluate_gates(load_policy(tiny_setup), "naa", _leakage(0.5, n=19))
    assert gate.status == "error" and "at least 20" in gate.message


def test_a_degenerate_hull_simplex_ranks_as_the_most_member_like() -> None:
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(2, 4, 16))
    line = np.outer(np.arange(4.0), rng.normal(size=16))[None]  # collinear predictions: volume 0
    scores = aggregate(torch.from_numpy(np.concatenate([spread, line])), "hull", 1e-12)
    assert torch.isfinite(scores).all()
    assert scores[2] > scores[:2].max()


# ----------------------------------------------------------------------------- class 7: outputs and files


def test_json_naming_a_folder_exits_2_before_any_verdict(tiny_setup: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["audit", str(tiny_setup), "--quiet", "--json", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert "OutputError" in err and "is a folder" in err and "Traceback" not in err
    assert "verdict" not in out and "PASS" not in out


def test_report_dir_that_is_a_file_exits_2_before_any_verdict(tiny_setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_setup.parent / "out").write_text("a file, not a folder")
    tiny_setup.write_text(tiny_setup.read_text() + "report: {dir: ./out}\n")
    assert main(["audit", str(tiny_setup), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "report.dir" in err and "is a file, not a folder" in err and "verdict" not in out


def test_a_report_that_fails_mid_write_gives_no_verdict(tiny_setup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", "report.json")

    monkeypatch.setattr("naa_guard.reports.write.write_reports", full_disk)
    tiny_setup.write_text(tiny_setup.read_text() + "report: {dir: ./out}\n")
    assert main(["audit", str(tiny_setup), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "No space left on device" in err and "verdict" not in out and "Traceback" not in err


def test_ctrl_c_is_one_line_and_exit_130(tiny_setup: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("naa_guard.audit.audit", interrupted)
    assert main(["audit", str(tiny_setup), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "naa-guard: interrupted; no verdict."


def test_a_named_pipe_in_an_image_folder_is_skipped_with_a_note(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), 10 * i).save(folder / f"{i}.png")
    os.mkfifo(folder / "blocked.png")
    loaded: list[object] = []
    worker = threading.Thread(target=lambda: loaded.append(load_samples(folder, size=8, channels=1)), daemon=True)
    worker.start()
    worker.join(timeout=30)  # it used to block forever on the pipe
    assert loaded, "loading an image folder with a named pipe in it did not return"
    samples = loaded[0]
    assert len(samples) == 3 and any("blocked.png" in note and "skipped" in note for note in samples.notes)  # type: ignore[attr-defined]


def test_alpha_channels_dropped_are_reported(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGBA", (8, 8), (200, 10, 10, 0)).save(folder / "clear.png")
    samples = load_samples(folder, size=8, channels=3)
    assert any("alpha channel" in note and "clear.png" in note for note in samples.notes)


@pytest.mark.parametrize(("fit", "size", "corner"), [("pad", 6, -1.0), ("center_crop", 10, None), ("resize", 16, None)])
def test_data_fit_prepares_images_of_another_size_and_the_report_says_so(tmp_path: Path, fit: str, size: int, corner: float | None) -> None:
    policy = make_tiny_setup(tmp_path, extra="")
    make_images(tmp_path / "members.npz", 24, size=size, seed=1)
    make_images(tmp_path / "nonmembers.npz", 24, size=size, seed=2)
    policy.write_text(policy.read_text().replace("nonmembers: ./nonmembers.npz}", f"nonmembers: ./nonmembers.npz, fit: {fit}}}"))
    result = audit(load_policy(policy), progress=False)
    assert any(f"fitted to the model's 8x8 input with data.fit: {fit}" in warning for warning in result.warnings)
    if corner is not None:
        samples = load_samples(tmp_path / "members.npz", size=8, channels=1, fit=fit)
        assert samples.images[:, 0, 0, 0].tolist() == [corner] * 24  # padded with black


def test_a_symlinked_policy_reads_paths_beside_its_target_in_cli_and_pytest(tmp_path: Path, pytester: pytest.Pytester) -> None:
    """One documented rule: relative paths resolve from the folder of the file the link points to."""
    real = make_tiny_setup(tmp_path / "real")
    link_folder = tmp_path / "elsewhere"
    link_folder.mkdir()
    (link_folder / "linked.naa.yaml").symlink_to(real)
    assert load_policy(link_folder / "linked.naa.yaml").data.members == (tmp_path / "real" / "members.npz").resolve()
    result = pytester.runpytest("--naa-policy", str(link_folder / "linked.naa.yaml"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_naa_policy_dir_collects_the_policies_in_it_or_says_why_not(tmp_path: Path, pytester: pytest.Pytester) -> None:
    make_tiny_setup(tmp_path / "policies")
    result = pytester.runpytest("--naa-policy", str(tmp_path / "policies"), "-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*tiny.naa.yaml::naa::auc*"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "settings.yaml").write_text("a: 1\n")
    result = pytester.runpytest("--naa-policy", str(tmp_path / "empty"), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*holds no policy file matching*settings.yaml*"])


# ----------------------------------------------------------------------------- class 8: fast feedback


@pytest.mark.parametrize("broken", ["policy", "data-path", "model-path"])
def test_policy_and_path_errors_come_before_torch_diffusers_and_sklearn(tmp_path: Path, broken: str) -> None:
    policy = make_tiny_setup(tmp_path)
    text = policy.read_text()
    if broken == "policy":
        text = text.replace("auc: 0.99", "auc: yes")
    elif broken == "data-path":
        text = text.replace("./members.npz", "./absent.npz")
    else:
        text = text.replace("./model", "./absent-model")
    policy.write_text(text)
    script = textwrap.dedent(
        f"""
        import sys
        from naa_guard.cli import main
        code = main(["audit", {str(policy)!r}, "--quiet"])
        heavy = sorted(name for name in ("torch", "diffusers", "sklearn", "scipy") if name in sys.modules)
        print("RESULT", code, ",".join(heavy) or "none")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(CODE)}, timeout=120)
    assert "RESULT 2 none" in done.stdout, done.stdout + done.stderr


# ----------------------------------------------------------------------------- the rule for every verdict


def test_the_json_report_of_an_errored_gate_is_not_passed(tiny_setup: Path, tmp_path: Path) -> None:
    """A limit-2 quick check used to pass with a collapsed interval; now it is an error, and no report says passed."""
    out = tmp_path / "report.json"
    assert main(["audit", str(tiny_setup), "--quiet", "--limit", "2", "--json", str(out)]) == 2
    assert not out.exists()


@pytest.mark.parametrize("policy", sorted((ROOT / "policies").glob("*.naa.yaml")), ids=lambda path: path.name)
def test_the_shipped_policies_pass_the_strict_rules(policy: Path) -> None:
    assert load_policy(policy).thresholds.limits()
