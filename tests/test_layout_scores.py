"""The stage-package re-layout changed no score, metric or verdict: the bundled fixtures audit to the
figures the last commit before it (9fa421c) gave, stored in ``tests/data/layout_golden.json``.

The golden file was written by running :func:`audit_figures` on that commit and on the new layout
(``python tests/test_layout_scores.py OUT.json``): both gave bit-identical scores on that machine.
Elsewhere batched CPU kernels round differently (torch promises no bit identity across CPUs), so
scores are compared within a tolerance of their scale (tests/tolerance.py) and the gates' verdicts
must be the same.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from tolerance import OTHER_MACHINE, assert_scores_close

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "data" / "layout_golden.json"
ATTACKS = "{naa: {}, loss: {}, pia: {}, secmi: {}, sima: {}}"
# decision: point and the 20-per-side floor hold in both layouts, so the same policy is valid in each
POLICIES = {
    "pixel": """
        version: 1
        name: overfit-digits
        model: {{path: {root}/overfit_digits/model}}
        data: {{members: {root}/overfit_digits/members.npz, nonmembers: {root}/overfit_digits/nonmembers.npz, limit: 40}}
        attacks: {attacks}
        thresholds: {{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}}
        checks: {{shift_auc: null}}
        runtime: {{device: cpu, batch_size: 16, seed: 0}}
        report: {{exposed: 0}}
    """,
    "tiny_sd": """
        version: 1
        name: tiny-sd
        model: {{path: {root}/tiny_sd/model}}
        data: {{members: {root}/tiny_sd/members.csv, nonmembers: {root}/tiny_sd/nonmembers.csv, limit: 24, conditioning: caption}}
        attacks: {attacks}
        thresholds: {{auc: 0.6, tpr_at_1pct_fpr: null, decision: point}}
        checks: {{shift_auc: null}}
        runtime: {{device: cpu, batch_size: 8, seed: 0}}
        report: {{exposed: 0}}
    """,
}


def _capability() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def audit_figures(folder: Path) -> dict[str, Any]:
    """Return, per bundled fixture, each attack's scores (as float.hex), metrics and gate verdicts.

    Uses only ``load_policy`` and ``audit``, which both layouts export, so the same code runs on each.
    """
    from naa_guard.audit import audit
    from naa_guard.policy import load_policy

    figures: dict[str, Any] = {"capability": _capability()}
    for name, template in POLICIES.items():
        path = folder / f"{name}.naa.yaml"
        path.write_text(textwrap.dedent(template.format(root=FIXTURES.resolve(), attacks=ATTACKS)), encoding="utf-8")
        result = audit(load_policy(path), progress=False)
        figures[name] = {
            "attacks": {
                attack: {
                    "members": [float(x).hex() for x in measured.member_scores],
                    "nonmembers": [float(x).hex() for x in measured.nonmember_scores],
                    "metrics": {metric: [value.value, *value.ci] for metric, value in measured.leakage.metrics.items()},
                    "direction": measured.leakage.direction,
                }
                for attack, measured in result.attacks.items()
            },
            "gates": [[gate.attack, gate.metric, gate.status, gate.value] for gate in result.gates],
            "passed": result.passed,
        }
    return figures


def test_the_bundled_fixtures_audit_as_before_the_relayout(tmp_path: Path) -> None:
    """Scores within OTHER_MACHINE of the golden scores' scale (tests/tolerance.py), on any machine.

    Bit identity is not compared even where the CPU capability and torch version match the golden
    file's: an AMD EPYC with AVX512 and the same torch gave other last bits than the Intel machine
    that wrote it (the capability string names the instruction set, not the kernels MKL/oneDNN pick).
    The gates' verdicts must be the same.
    """
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    now = audit_figures(tmp_path)
    for fixture in POLICIES:
        then, found = golden[fixture], now[fixture]
        assert list(found["attacks"]) == list(then["attacks"])
        for attack, measured in found["attacks"].items():
            for role in ("members", "nonmembers"):
                scores = [float.fromhex(x) for x in measured[role]]
                expected = [float.fromhex(x) for x in then["attacks"][attack][role]]
                assert_scores_close(scores, expected, OTHER_MACHINE, err_msg=f"{fixture} {attack} {role}")
        assert [gate[:3] for gate in found["gates"]] == [gate[:3] for gate in then["gates"]]
        assert found["passed"] == then["passed"]


def test_the_golden_file_holds_what_the_test_compares() -> None:
    """A golden file without scores would make the comparison vacuous."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for fixture in POLICIES:
        attacks = golden[fixture]["attacks"]
        assert set(attacks) == {"naa", "loss", "pia", "secmi", "sima"}
        assert all(len(measured["members"]) >= 20 and len(measured["nonmembers"]) >= 20 for measured in attacks.values())
        assert golden[fixture]["gates"] and golden[fixture]["passed"] is False  # the fixtures leak: every layout must say so


if __name__ == "__main__":  # regenerate (or produce one side of a comparison): python tests/test_layout_scores.py OUT.json
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        Path(sys.argv[1]).write_text(json.dumps(audit_figures(Path(scratch)), indent=1) + "\n", encoding="utf-8")
