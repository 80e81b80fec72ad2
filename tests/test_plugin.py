"""Tests of the pytest plugin (pytest_plugin/), run through pytester the way a team would use it.

The leaking model is the committed overfit digits fixture: NAA separates its 100 members from
300 non-members with AUC ~0.99. In-process runs (``runpytest``) share this process's torch;
subprocess runs are kept to what needs them (import cost, xdist).
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

OVERFIT = Path(__file__).parent / "fixtures" / "overfit_digits"

FAIL_MESSAGE = re.compile(
    r"naa AUC 0\.9\d\d \(95% CI 0\.9\d\d-[01]\.\d\d\d, 100 members / 300 non-members, members score higher\) exceeds limit 0\.600"
)


def leaky_policy(folder: Path, name: str = "leaky.naa.yaml", *, thresholds: str = "{auc: 0.6, tpr_at_1pct_fpr: null}", limit: int | None = 40, device: str = "cpu") -> Path:
    """Write a policy over the overfit digits fixture (absolute paths) and return its path.

    The gates decide on the point estimate (``decision: point``), so that 40 per side can carry an
    AUC gate of 0.6 (under the default upper_ci it is unresolvable: see tests/test_resolvable.py).
    """
    if "decision" not in thresholds:
        thresholds = thresholds.removesuffix("}") + ", decision: point}"
    data_limit = f", limit: {limit}" if limit else ""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        model: {{path: {OVERFIT / "model"}}}
        data: {{members: {OVERFIT / "members.npz"}, nonmembers: {OVERFIT / "nonmembers.npz"}{data_limit}}}
        attacks: {{naa: {{t: 40, stride: 10, noise: scaled, sigma: 0.1}}}}
        thresholds: {thresholds}
        runtime: {{device: "{device}", batch_size: 128}}
        """),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module", autouse=True)
def engine_imported(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run one tiny audit here first, so torch, diffusers, scikit-learn and matplotlib are imported.

    pytester's in-process runs remove the modules first imported inside them, and extension
    modules cannot be imported twice in one process.
    """
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy
    from naa_guard.reports.write import write_reports

    folder = tmp_path_factory.mktemp("engine")
    write_reports(audit(load_policy(leaky_policy(folder, limit=20)), progress=False), folder, plots=True)


def _refuse_to_load(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded although its scores are cached")


def test_collects_one_item_per_attack_and_gate(pytester: pytest.Pytester) -> None:
    # 40 non-members resolve no TPR gate: unresolvable: warn collects them anyway (tests/test_resolvable.py: the error).
    leaky_policy(pytester.path, thresholds="{auc: 0.6, tpr_at_1pct_fpr: 0.05, tpr_at_0_1pct_fpr: 0.01, unresolvable: warn}")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["leaky.naa.yaml::naa::auc", "leaky.naa.yaml::naa::tpr@1%fpr", "leaky.naa.yaml::naa::tpr@0.1%fpr"])
    result = pytester.runpytest("--collect-only", "-q", "-k", "tpr")
    assert "leaky.naa.yaml::naa::auc" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*2/3 tests collected (1 deselected)*"])


def test_policy_patterns_ini_and_naa_policy_option_choose_the_files(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path, "a.naa.yml")
    leaky_policy(pytester.path, "b.privacy.yaml")
    leaky_policy(pytester.path / "elsewhere", "c.yaml")
    result = pytester.runpytest("--collect-only", "-q")
    assert "a.naa.yml::naa::auc" in result.stdout.str()
    assert "b.privacy.yaml" not in result.stdout.str()
    pytester.makeini("[pytest]\nnaa_policy_patterns = *.privacy.yaml\n")
    result = pytester.runpytest("--collect-only", "-q", "--naa-policy", "elsewhere/c.yaml")
    result.stdout.fnmatch_lines(["b.privacy.yaml::naa::auc", "elsewhere/c.yaml::naa::auc"])
    assert "a.naa.yml" not in result.stdout.str()


def test_leaking_model_fails_its_gate_and_an_unresolvable_gate_errors(pytester: pytest.Pytester) -> None:
    # 300 non-members cannot resolve TPR@1%FPR: a collection error of that item, before any model loads.
    path = leaky_policy(pytester.path, thresholds="{auc: 0.6, tpr_at_1pct_fpr: 0.05}", limit=None)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting leaky.naa.yaml*",
        "PolicyError: *thresholds.tpr_at_1pct_fpr: the TPR@1%FPR gate (limit 0.05) cannot be resolved with 100 members / 300 non-members*",
        "*short test summary info*",
        "ERROR leaky.naa.yaml::naa::tpr@1%fpr",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    path.write_text(path.read_text().replace("tpr_at_1pct_fpr: 0.05", "tpr_at_1pct_fpr: null"))
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert FAIL_MESSAGE.search(output), output
    result.stdout.fnmatch_lines([
        "*FAILURES*",
        "*_ [[]naa-guard[]] leaky.naa.yaml::naa::auc _*",
        "naa AUC *exceeds limit 0.600",
        "policy: *leaky.naa.yaml (thresholds.auc: 0.6)",
        "ROC plot and score histograms: re-run with --naa-report DIR",
        "*naa-guard privacy gates*",
        "policy*attack*gate*value*CI*limit*verdict",
        "leaky.naa.yaml*naa*auc*0.9??*0.600*FAIL",
        "leaky.naa.yaml: 100 members / 300 non-members; scores computed, model loaded",
        "naa-guard verdict: FAIL",
    ])  # fmt: skip
    assert "pytest_plugin" not in output  # no traceback of plugin internals


def test_lenient_limits_pass(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path, thresholds="{auc: 0.999, tpr_at_1pct_fpr: null}")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["leaky.naa.yaml*naa*auc*0.999*PASS (point estimate; upper 95% CI bound *)", "naa-guard verdict: PASS on point estimates (decision: point)*"])


def test_invalid_policy_is_a_collection_error_with_the_validation_message(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path, thresholds="{auc: 2.0, tpr_at_1pct_fpr: null, typo: 1}")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting leaky.naa.yaml*",
        "PolicyError: *leaky.naa.yaml: the policy is invalid (2 problem(s)):",
        "  - thresholds.auc: Input should be less than 1 (found: 2.0)",
        "  - thresholds.typo: unknown key; allowed keys here: *",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    assert "pytest_plugin" not in result.stdout.str()


def test_missing_environment_skips_and_strict_makes_it_an_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # outside CI a skip is the default (see the CI test below)
    leaky_policy(pytester.path, device="cuda:99")  # no machine has 100 GPUs
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "leaky.naa.yaml*naa*auc*-*-*0.600*NOT VERIFIED (skipped)",
        "NOT VERIFIED: leaky.naa.yaml::naa::auc was skipped: runtime.device is 'cuda:99' but *",
        "naa-guard verdict: NOT VERIFIED (gates skipped)",
        "SKIPPED [[]1[]] leaky.naa.yaml:1: naa-guard: runtime.device is 'cuda:99' but *",
    ])  # fmt: skip
    result = pytester.runpytest("--naa-strict")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["EnvironmentUnavailableError: *'cuda:99'*", "(--naa-strict: a missing environment is an error, not a skip)"])
    pytester.makeini("[pytest]\nnaa_strict = true\n")
    pytester.runpytest().assert_outcomes(errors=1)
    # --naa-device overrides the policy's runtime.device: the audit now runs on the CPU.
    pytester.runpytest("--naa-device", "cpu").assert_outcomes(failed=1)


def test_under_ci_strict_is_the_default_and_opting_out_still_says_not_verified(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI job that lost its GPU must not go green: with $CI set a skip is an error unless opted out."""
    monkeypatch.setenv("CI", "true")
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    leaky_policy(pytester.path, device="cuda:99")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["EnvironmentUnavailableError: *'cuda:99'*", "($CI is set, so strict is the default; --naa-no-strict opts out: a missing environment is an error, not a skip)"])
    result = pytester.runpytest("--naa-no-strict")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["NOT VERIFIED: leaky.naa.yaml::naa::auc was skipped: *", "naa-guard verdict: NOT VERIFIED (gates skipped)"])
    assert "### naa-guard privacy gates: NOT VERIFIED (gates skipped)" in summary.read_text()
    assert "- **NOT VERIFIED: leaky.naa.yaml::naa::auc was skipped:" in summary.read_text()
    pytester.makeini("[pytest]\nnaa_strict = false\n")
    pytester.runpytest().assert_outcomes(skipped=1)
    monkeypatch.setenv("CI", "false")  # set but false: not CI
    pytester.makeini("[pytest]\n")
    pytester.runpytest().assert_outcomes(skipped=1)
    result = pytester.runpytest("--naa-strict", "--naa-no-strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--naa-quick", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--naa-quick: expected a whole number >= 1, got '0'*"])
    result = pytester.runpytest("--naa-device", "gpu")
    result.stderr.fnmatch_lines(["*--naa-device: unknown device 'gpu'*"])


def test_quick_check_subsamples_and_says_so(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path, limit=None)
    result = pytester.runpytest("--naa-quick", "20")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "naa-guard: --naa-quick 20 [[]quick check: 20 per side, not a release verdict[]]",
        "naa AUC * 20 members / 20 non-members, * exceeds limit 0.600 [[]quick check: 20 per side, not a release verdict[]]",
        "leaky.naa.yaml: 20 members / 20 non-members; * [[]quick check: 20 per side, not a release verdict[]]",
    ])  # fmt: skip


def test_second_run_regates_from_the_cache_without_loading_the_model(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    leaky_policy(pytester.path)
    first = pytester.runpytest()
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*scores computed, model loaded*"])
    assert list((pytester.path / ".pytest_cache" / "d" / "naa-guard").glob("*.npz"))

    monkeypatch.setattr("naa_guard.scoring.models.load_target", _refuse_to_load)
    second = pytester.runpytest()
    second.assert_outcomes(failed=1)
    second.stdout.fnmatch_lines(["*cached scores, model not loaded*"])
    assert second.stdout.str().count("AUC") == first.stdout.str().count("AUC")

    # --naa-no-cache and --cache-clear both force a fresh audit, which must load the model.
    assert "the model was loaded although" in pytester.runpytest("--naa-no-cache").stdout.str()
    assert "the model was loaded although" in pytester.runpytest("--cache-clear").stdout.str()
    # Without pytest's cache provider the plugin runs without a cache, too.
    assert "the model was loaded although" in pytester.runpytest("-p", "no:cacheprovider").stdout.str()


def test_junit_xml_carries_the_metric_properties(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path)
    pytester.runpytest("--junitxml=junit.xml").assert_outcomes(failed=1)
    case = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None and case.get("name") == "auc"
    properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    assert {"attack", "metric", "value", "ci_low", "ci_high", "limit", "direction", "n_members", "n_nonmembers"} <= set(properties)
    assert (properties["attack"], properties["metric"], properties["direction"]) == ("naa", "auc", "members_higher")
    assert float(properties["ci_low"]) <= float(properties["value"]) <= float(properties["ci_high"])
    assert float(properties["value"]) > 0.9 and float(properties["limit"]) == 0.6
    assert (properties["n_members"], properties["n_nonmembers"]) == ("40", "40")


def test_report_folder_holds_json_markdown_roc_and_histograms(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path)
    result = pytester.runpytest("--naa-report", "naa-report")
    folder = pytester.path / "naa-report" / "leaky"
    assert sorted(path.name for path in folder.iterdir()) == ["report.html", "report.json", "report.md", "roc.png", "scores_naa.png"]
    assert json.loads((folder / "report.json").read_text())["gates"][0]["status"] == "fail"
    assert (folder / "roc.png").read_bytes()[:4] == b"\x89PNG"
    result.stdout.fnmatch_lines([f"report: {folder / 'report.md'} (ROC plot: {folder / 'roc.png'}; open {folder / 'report.html'} to review it all)"])


def test_naa_baseline_compares_with_a_previous_report_and_refuses_another_sample_set(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path)
    pytester.runpytest("--naa-report", "first").assert_outcomes(failed=1)
    baseline = pytester.path / "first" / "leaky" / "report.json"
    result = pytester.runpytest("--naa-baseline", str(baseline), "--naa-report", "second")
    result.assert_outcomes(failed=1)  # the absolute limit still fails; the comparison itself is recorded
    gate = json.loads((pytester.path / "second" / "leaky" / "report.json").read_text())["gates"][0]
    assert gate["baseline"]["report"] == str(baseline) and gate["baseline"]["change"] == 0.0
    leaky_policy(pytester.path, limit=30)  # another sample set
    result = pytester.runpytest("--naa-baseline", str(baseline))
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["BaselineError: baseline * does not measure the same thing as this audit*", "  - member sample set differs (*count: 40 (baseline) vs 30 (now)*"])


def test_markdown_table_is_appended_to_the_github_step_summary(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    leaky_policy(pytester.path)
    summary = pytester.path / "step_summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest().assert_outcomes(failed=1)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n")
    assert "### naa-guard privacy gates: FAIL" in text
    assert re.search(r"\| leaky\.naa\.yaml \| naa \| auc \| 0\.9\d\d \| [\d.]+-[\d.]+ \| 0\.600 \| FAIL \|", text), text


def test_fixtures_share_the_session_audit_with_the_gate_items(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import naa_guard.audit

    runs: list[str] = []
    real_audit = naa_guard.audit.audit

    def counting_audit(policy, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(policy.name)
        return real_audit(policy, **kwargs)

    monkeypatch.setattr("naa_guard.audit.audit", counting_audit)
    leaky_policy(pytester.path, thresholds="{auc: 0.999, tpr_at_1pct_fpr: null}")
    pytester.makepyfile(
        test_gates="""
        def test_hand_written_gate(naa_audit, naa_policy):
            policy = naa_policy("leaky.naa.yaml")
            assert policy.name == "leaky" and policy.thresholds.auc == 0.999
            result = naa_audit("leaky.naa.yaml")
            assert result is naa_audit("leaky.naa.yaml")
            assert result.attacks["naa"].leakage.auc > 0.9
        """
    )
    pytester.runpytest("--naa-no-cache").assert_outcomes(passed=2)
    assert runs == ["leaky"]


def test_importing_the_plugin_and_collecting_do_not_import_torch(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path)
    pytester.makeconftest(
        """
        import sys

        def pytest_collection_finish(session):
            heavy = sorted(name for name in ("torch", "diffusers", "sklearn", "matplotlib") if name in sys.modules)
            (session.config.rootpath / "modules.txt").write_text(",".join(heavy) or "none")
        """
    )
    pytester.runpytest_subprocess("--collect-only", "-q").stdout.fnmatch_lines(["leaky.naa.yaml::naa::auc"])
    assert (pytester.path / "modules.txt").read_text() == "none"
    probe = "import sys, pytest_plugin.plugin; print(sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))"
    pytester.run(sys.executable, "-c", probe).stdout.fnmatch_lines(["[[][]]"])
    # The engine the first gate item imports still defers torch to the model load.
    probe = "import sys, naa_guard.audit, naa_guard.reports.write; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    pytester.run(sys.executable, "-c", probe).stdout.fnmatch_lines(["[[][]]"])


def test_xdist_gives_the_same_outcomes_with_each_policy_on_one_worker(pytester: pytest.Pytester) -> None:
    # Collection order baseline (1 gate), leaky (2 gates), test_other: xdist's plain "load"
    # would hand out items two by two and split leaky's gates across the workers.
    leaky_policy(pytester.path, "baseline.naa.yaml", thresholds="{auc: 0.999, tpr_at_1pct_fpr: null}")
    leaky_policy(pytester.path, "leaky.naa.yaml", thresholds="{auc: 0.6, tpr_at_1pct_fpr: 0.05, unresolvable: warn}")
    pytester.makepyfile(test_other="def test_unrelated():\n    assert True\n")
    plain = pytester.runpytest("--naa-no-cache")
    plain.assert_outcomes(passed=2, failed=2)
    distributed = pytester.runpytest_subprocess("--naa-no-cache", "-n", "2", "-v")
    distributed.assert_outcomes(passed=2, failed=2)
    workers = re.findall(r"\[(gw\d)\] \[\s*\d+%\] \w+ leaky\.naa\.yaml::naa::(\S+)", distributed.stdout.str())
    assert len(workers) == 2 and workers[0][0] == workers[1][0], distributed.stdout.str()
    distributed.stdout.fnmatch_lines(["baseline.naa.yaml*auc*PASS*", "leaky.naa.yaml*auc*FAIL", "leaky.naa.yaml*tpr@1%fpr*FAIL"])


def test_nproc_runs_the_audit_under_torchrun_with_the_same_items_outcomes_and_cache(pytester: pytest.Pytester) -> None:
    leaky_policy(pytester.path, thresholds="{auc: 0.6, tpr_at_1pct_fpr: 0.05, unresolvable: warn}")
    plain = pytester.runpytest("--naa-no-cache", "-q")
    plain.assert_outcomes(failed=2)
    distributed = pytester.runpytest("--naa-nproc", "2", "-q")
    distributed.assert_outcomes(failed=2)
    gate_lines = [line for line in plain.stdout.lines if line.startswith("leaky.naa.yaml")]
    assert gate_lines and all(line in distributed.stdout.lines for line in gate_lines)  # same items, values and verdicts
    distributed.stdout.fnmatch_lines(["*scores computed, model loaded*"])
    again = pytester.runpytest("--naa-nproc", "2", "-q")
    again.assert_outcomes(failed=2)
    again.stdout.fnmatch_lines(["*cached scores, model not loaded*"])


def test_a_cache_folder_that_cannot_be_written_costs_time_never_an_error(pytester: pytest.Pytester) -> None:
    """Read-only is emulated by pointing pytest's cache_dir at a file: the tests run as root, where chmod stops no write."""
    leaky_policy(pytester.path)
    (pytester.path / "cache-is-a-file").write_text("not a folder")
    result = pytester.runpytest("-o", "cache_dir=cache-is-a-file", "--naa-report", "report", "-W", "ignore::pytest.PytestCacheWarning")
    result.assert_outcomes(failed=1)  # the leak is still caught: the verdict does not depend on the cache
    assert "Traceback" not in result.stdout.str() and "OSError" not in result.stdout.str()
    (report,) = (pytester.path / "report").glob("*/report.json")
    warnings = json.loads(report.read_text())["warnings"]
    assert sum("cache folder could not hold the naa-guard" in warning for warning in warnings) == 2, warnings
