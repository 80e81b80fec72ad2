"""The strict policy reader (naa_guard/strictyaml.py): exponent numbers, files that are not UTF-8, empty files."""

from __future__ import annotations

from pathlib import Path

import pytest

from naa_guard.errors import PolicyError
from naa_guard.policy import load_policy

BODY = """version: 1
name: demo
model: {{path: ./model}}
data: {{members: ./members, nonmembers: ./nonmembers{data}}}
attacks: {{naa: {{}}}}
thresholds: {{auc: 0.6, tpr_at_1pct_fpr: 0.05{thresholds}}}
"""


def _policy(tmp_path: Path, *, data: str = "", thresholds: str = "") -> Path:
    path = tmp_path / "p.naa.yaml"
    path.write_text(BODY.format(data=data, thresholds=thresholds), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("data", "thresholds", "limit", "delta"),
    [
        (", limit: 1e3", "", 1000, 1e-5),  # PyYAML read "1e3" as a string: "Input should be a valid integer"
        ("", ", delta: 1e-5", None, 1e-5),  # and "1e-5" (no dot) too: "Input should be a valid number"
        ("", ", delta: 25e-7", None, 2.5e-6),  # YAML 1.1 needs a dot and a signed exponent; 1.2 and JSON do not
        (", limit: 2e2", ", epsilon_lb: 1e0", 200, 1e-5),
    ],
)
def test_exponent_numbers_are_read_as_the_numbers_they_mean(tmp_path: Path, data: str, thresholds: str, limit: int | None, delta: float) -> None:
    policy = load_policy(_policy(tmp_path, data=data, thresholds=thresholds))
    assert policy.data.limit == limit and isinstance(policy.data.limit, (int, type(None)))
    assert policy.thresholds.delta == delta


def test_quoted_or_fractional_exponents_still_say_why_not(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"thresholds\.delta"):
        load_policy(_policy(tmp_path, thresholds=', delta: "1e-5"'))  # a quoted value is a string, as everywhere
    with pytest.raises(PolicyError, match=r"data\.limit"):
        load_policy(_policy(tmp_path, data=", limit: 1.5e3"))  # not a whole number of samples


def test_a_file_that_is_not_utf8_names_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.naa.yaml"
    path.write_bytes(BODY.format(data="", thresholds="").replace("name: demo", "name: café").encode("latin-1"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message and "byte 0xe9 at line 2, column 10 is not UTF-8" in message
    assert "re-save the file as UTF-8" in message and "codec can't decode" not in message


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n"])
def test_an_empty_policy_file_is_named_as_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.naa.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "the file is empty" in message and "NoneType" not in message
