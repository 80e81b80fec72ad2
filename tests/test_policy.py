"""Policy files: loading, path resolution, ${ENV} expansion, schema, and validation messages."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy, policy_schema

VALID = """
version: 1
name: demo
model: {path: ./model}
data: {members: ./members, nonmembers: ./nonmembers}
attacks:
  naa: {t: 80, stride: 10, queries: 5, noise: schedule, sigma: 0.1, metric: l2}
thresholds: {auc: 0.6, tpr_at_1pct_fpr: 0.05}
runtime: {device: auto, dtype: float32, batch_size: 64, seed: 0}
"""


def _write(tmp_path: Path, body: str, name: str = "p.naa.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def test_valid_policy_loads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, VALID))
    assert policy.name == "demo"
    assert policy.model.path == (tmp_path / "model").resolve()
    assert policy.data.members == (tmp_path / "members").resolve()
    assert policy.attacks["naa"].t == 80 and policy.attacks["naa"].metric == "l2"
    assert policy.thresholds.limits() == {"auc": 0.6, "tpr_at_1pct_fpr": 0.05}
    assert policy.source == (tmp_path / "p.naa.yaml").resolve()


def test_defaults_fill_everything_but_model_and_data(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "version: 1\nmodel: {path: m}\ndata: {members: a, nonmembers: b}\n", "mini.naa.yaml"))
    assert policy.name == "mini"
    assert list(policy.attacks) == ["naa"] and policy.attacks["naa"].t == 80
    assert policy.runtime.batch_size == 64 and policy.thresholds.decision == "upper_ci"


def test_environment_variables_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPT_DIR", str(tmp_path / "checkpoints"))
    policy = load_policy(_write(tmp_path, VALID.replace("./model", "\"${CKPT_DIR}/ddpm\"")))
    assert policy.model.path == tmp_path / "checkpoints" / "ddpm"


def test_missing_environment_variable_names_key_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(PolicyError, match=r"model\.path: environment variable \$\{NOT_SET_ANYWHERE\} is not set"):
        load_policy(_write(tmp_path, VALID.replace("./model", "\"${NOT_SET_ANYWHERE}\"")))


MALFORMED = [
    # (what is wrong, replacement in VALID, key path named, words in the message)
    ("wrong version", ("version: 1", "version: 2"), "version", "Input should be 1"),
    ("unknown top-level key", ("name: demo", "name: demo\nthreshold: {}"), "threshold", "allowed keys here"),
    ("unknown model key", ("{path: ./model}", "{path: ./model, subfolder: ema}"), "model.subfolder", "allowed keys here: allow_pickle, config, guidance, loader, lora, lora_scale, max_sequence_length, path, reference, single_file, unet_subfolder"),
    ("missing nonmembers", ("nonmembers: ./nonmembers", "limit: 5"), "data.nonmembers", "required key is missing"),
    ("limit zero", ("nonmembers: ./nonmembers}", "nonmembers: ./nonmembers, limit: 0}"), "data.limit", "greater than or equal to 1"),
    ("unknown attack", ("naa: {", "nope: {"), "attacks.nope", "unknown attack; known attacks: loss, naa, pia, pian, secmi"),
    ("unknown aggregation metric", ("metric: l2", "metric: l3"), "attacks.naa.metric", "'l2', 'l1', 'centroid', 'density' or 'hull'"),
    ("unknown attack parameter", ("sigma: 0.1", "sigma: 0.1, steps: 3"), "attacks.naa.steps", "unknown key"),
    ("chain below zero", ("t: 80", "t: 20"), "attacks.naa", "smallest valid t is 40"),
    ("auc limit out of range", ("auc: 0.6", "auc: 1.5"), "thresholds.auc", "less than 1"),
    ("bad decision", ("tpr_at_1pct_fpr: 0.05}", "tpr_at_1pct_fpr: 0.05, decision: strict}"), "thresholds.decision", "'point' or 'upper_ci'"),
    ("unknown device", ("device: auto", "device: gpu"), "runtime.device", "allowed: auto, cpu, cuda"),
    ("batch size zero", ("batch_size: 64", "batch_size: 0"), "runtime.batch_size", "greater than or equal to 1"),
    ("unknown dtype", ("dtype: float32", "dtype: fp8"), "runtime.dtype", "'float32', 'float16' or 'bfloat16'"),
    ("string for a number", ("seed: 0", "seed: zero"), "runtime.seed", "valid integer"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "key", "words"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_policy_names_file_key_and_problem(tmp_path: Path, case: str, change: tuple[str, str], key: str, words: str) -> None:
    assert change[0] in VALID
    path = _write(tmp_path, VALID.replace(change[0], change[1], 1))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert f"  - {key}:" in message
    assert words in message


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    body = VALID.replace("version: 1", "version: 3").replace("batch_size: 64", "batch_size: -1")
    with pytest.raises(PolicyError) as info:
        load_policy(_write(tmp_path, body))
    assert "(2 problem(s))" in str(info.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [("version: [1\n", "not valid YAML"), ("- just\n- a list\n", "must be a YAML mapping"), ("", "the file is empty")],
)
def test_unparseable_policy_file(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "bad.naa.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PolicyError, match=words) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "absent.naa.yaml")


def test_json_schema_lists_every_section_and_attack_parameter() -> None:
    schema = policy_schema()
    assert {"version", "name", "model", "data", "attacks", "thresholds", "runtime", "report"} <= set(schema["properties"])
    naa = schema["properties"]["attacks"]["properties"]["naa"]
    assert {"t", "stride", "queries", "noise", "sigma", "metric"} <= set(naa["properties"])
    json.dumps(schema)  # serialisable as is
