"""Tests of parameter sweeps: parsing, validation, scoring every combination, CSV, plot and CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import make_tiny_setup

import naa_guard.audit
import naa_guard.scoring.models
import naa_guard.targets
from naa_guard.audit import audit
from naa_guard.cli import main
from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy
from naa_guard.sweep import format_sweep, parse_params, sweep, sweep_settings, write_sweep


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a policy over a tiny random model and 2 x 24 random images, listing naa then loss."""
    return make_tiny_setup(
        tmp_path_factory.mktemp("sweep"), attacks="{naa: {t: 40, stride: 10}, loss: {t: 50}}",
        thresholds="{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}", batch_size=16, name="sweep",
    )


def test_parse_params_reads_yaml_scalars() -> None:
    assert parse_params(["t=20,40", "noise=schedule, scaled", "sigma=0.1,1.5"]) == {
        "t": [20, 40], "noise": ["schedule", "scaled"], "sigma": [0.1, 1.5],
    }  # fmt: skip


@pytest.mark.parametrize(("texts", "message"), [(["t"], "expected NAME=v1,v2"), (["t="], "expected NAME=v1,v2"), (["t=1", "t=2"], "given twice"), ([], "at least one")])
def test_parse_params_rejects_malformed_arguments(texts: list[str], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_params(texts)


def test_sweep_settings_start_from_the_policy_and_validate_every_combination(tiny_policy: Path) -> None:
    policy = load_policy(tiny_policy)
    settings = sweep_settings(policy, "naa", {"metric": ["l2", "hull"]})
    assert [(s.t, s.stride, s.metric) for s in settings] == [(40, 10, "l2"), (40, 10, "hull")]
    with pytest.raises(PolicyError, match=r"t=20, stride=10: naa: t=20 is too small") as error:
        sweep_settings(policy, "naa", {"t": [20, 40, 30], "stride": [10, 5]})
    assert "t=30, stride=10" in str(error.value) and "t=40" not in str(error.value)
    with pytest.raises(PolicyError, match=r"steps=3: steps: unknown parameter; naa has: t, stride"):
        sweep_settings(policy, "naa", {"steps": [3]})
    with pytest.raises(PolicyError, match="unknown attack"):
        sweep_settings(policy, "nope", {"t": [1]})


def test_sweep_scores_every_combination_like_an_audit_with_one_model_load(tiny_policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []
    real_load = naa_guard.targets.load_target

    def counting_load(*args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append(args)
        return real_load(*args, **kwargs)

    decoded = []
    real_samples = naa_guard.audit.list_samples

    def counting_samples(*args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(kwargs["role"])
        return real_samples(*args, **kwargs)

    monkeypatch.setattr(naa_guard.targets, "load_target", counting_load)
    monkeypatch.setattr(naa_guard.scoring.models, "load_target", counting_load)
    monkeypatch.setattr(naa_guard.audit, "list_samples", counting_samples)
    policy = load_policy(tiny_policy)
    result = sweep(policy, "loss", {"t": [10, 100]}, progress=False)
    assert len(loads) == 1
    assert decoded == ["members", "nonmembers"]  # the sets are listed once for the whole sweep
    assert [row.params for row in result.rows] == [{"t": 10}, {"t": 100}]
    assert (result.n_members, result.n_nonmembers) == (24, 24)
    single = policy.model_copy(update={"attacks": {"loss": policy.attacks["loss"].model_copy(update={"t": 100})}})
    assert result.rows[1].auc == audit(single, progress=False).attacks["loss"].leakage.auc


def test_sweep_writes_table_csv_and_plot(tiny_policy: Path, tmp_path: Path) -> None:
    result = sweep(load_policy(tiny_policy), "naa", {"metric": ["l2", "centroid"], "queries": [2, 3]}, progress=False)
    table = format_sweep(result)
    assert table.splitlines()[1].split()[:4] == ["metric", "queries", "AUC", "leak"]
    assert table.count("<- highest leak AUC") == 1
    assert [line.split()[:2] for line in table.splitlines()[3:7]] == [["l2", "2"], ["l2", "3"], ["centroid", "2"], ["centroid", "3"]]
    csv_path, plot_path = write_sweep(result, tmp_path / "out")
    with csv_path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["metric"], row["queries"]) for row in rows] == [("l2", "2"), ("l2", "3"), ("centroid", "2"), ("centroid", "3")]
    assert float(rows[0]["leak_auc"]) == pytest.approx(result.rows[0].leak_auc)
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sweep(tiny_policy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", str(tiny_policy), "--param", "t=10,100", "--attack", "loss", "--out", str(tmp_path), "--quiet"])
    output = capsys.readouterr().out
    assert code == 0
    assert "sweep of loss" in output and (tmp_path / "sweep-loss-t.csv").is_file() and (tmp_path / "sweep-loss-t.png").is_file()
    assert main(["sweep", str(tiny_policy), "--param", "t=10,20"]) == 2  # naa (listed first): t=10 and 20 too small
    assert "t=10: naa: t=10 is too small" in capsys.readouterr().err
