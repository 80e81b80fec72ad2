"""The score cache's key: it changes with the source of every module that shapes a score, not only the attack's."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from naa_guard.scoring.keys import NOT_ON_SCORING_PATH, PACKAGE_ROOT, left_out_of_the_key

# The modules that turn files into scores: listing, decoding and fitting samples, conditioning,
# chunking and batching, targets, attacks, the stores, the ranks. Everything they import shapes a score.
SCORING_ENTRY_POINTS = (
    "scoring.runner", "scoring.scorer", "scoring.models", "scoring.keys", "scoring.chunks", "scoring.distributed",
    "samples.conditioning", "samples.listing", "samples.summary",
)  # fmt: skip

DIGEST_AFTER_EDIT = """
import sys
from pathlib import Path
import naa_guard
from naa_guard.attacks.loss import LossAttack
from naa_guard.scoring.keys import implementation_digest
root = Path(naa_guard.__file__).parent
assert root.parent == Path(sys.argv[1]), (root, sys.argv[1])  # the copy, not the installed package
before = implementation_digest(LossAttack())
for name in sys.argv[2:]:
    with (root / name).open("a") as module:
        module.write("\\n# an edit\\n")
    print(name, implementation_digest(LossAttack()) != before)
"""


def test_editing_any_scoring_module_changes_the_key_and_a_report_module_does_not(tmp_path: Path) -> None:
    """Run on a copy of the package, edited in place (never the checkout under test)."""
    shutil.copytree(PACKAGE_ROOT, tmp_path / "naa_guard", ignore=shutil.ignore_patterns("__pycache__"))
    edited = ["samples/decode.py", "samples/fit.py", "samples/conditioning.py", "scoring/runner.py", "attacks/naa.py", "attacks/sima.py", "reports/text.py", "verdict/gates.py"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    changed = {}
    for name in edited:  # one edit per process, so each answer is about that module alone
        shutil.rmtree(tmp_path / "naa_guard", ignore_errors=True)
        shutil.copytree(PACKAGE_ROOT, tmp_path / "naa_guard", ignore=shutil.ignore_patterns("__pycache__"))
        finished = subprocess.run([sys.executable, "-c", DIGEST_AFTER_EDIT, str(tmp_path), name], capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300)
        assert finished.returncode == 0, finished.stderr
        module, answer = finished.stdout.split()
        changed[module] = answer == "True"
    assert changed == {
        "samples/decode.py": True, "samples/fit.py": True, "samples/conditioning.py": True, "scoring/runner.py": True,
        "attacks/naa.py": True, "attacks/sima.py": True, "reports/text.py": False, "verdict/gates.py": False,
    }  # fmt: skip


def _imported_modules(path: Path) -> set[str]:
    """Return the naa_guard modules a file imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    found: set[str] = set()

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for statement in node.orelse:
                    self.visit(statement)
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.split(".")[0] == "naa_guard":
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "naa_guard")

    Imports().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _module_file(module: str) -> Path | None:
    path = PACKAGE_ROOT.joinpath(*module.split(".")[1:])
    return next((candidate for candidate in (path.with_suffix(".py"), path / "__init__.py") if candidate.is_file()), None)


def test_no_module_the_scoring_code_imports_is_left_out_of_the_key() -> None:
    """NOT_ON_SCORING_PATH may only hold modules the scoring code never reaches (reports, gates, the CLI)."""
    reached: set[Path] = set()
    pending = [f"naa_guard.{name}" for name in SCORING_ENTRY_POINTS]
    while pending:
        path = _module_file(pending.pop())
        if path is not None and path not in reached:
            reached.add(path)
            pending += _imported_modules(path)
    names = {path.relative_to(PACKAGE_ROOT).as_posix() for path in reached}
    assert {"samples/decode.py", "samples/fit.py", "attacks/common.py", "targets/pixel.py"} <= names  # the walk follows imports
    left_out = sorted(name for name in names if left_out_of_the_key(name))
    assert not left_out, f"on the scoring path but left out of the cache key: {left_out}"


@pytest.mark.parametrize("name", sorted(NOT_ON_SCORING_PATH))
def test_every_module_left_out_exists(name: str) -> None:
    """A renamed module must not leave a stale name here (its new name would be hashed, which is safe, but say so)."""
    assert (PACKAGE_ROOT / name).is_dir() if name.endswith("/") else (PACKAGE_ROOT / name).is_file()
