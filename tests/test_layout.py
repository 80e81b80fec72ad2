"""The package layout keeps the audit's stages apart: no import circles, no lower stage importing a
higher one, modules of one concern and modest size (issue: one package per stage).

Every import counts, also those under ``TYPE_CHECKING`` and inside functions: a circle that only
type checkers see is still two modules that cannot be read apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 420  # "under about 400": a little slack for a module that is one concern

# The stages, lowest first. A module may import its own stage and any lower one, never a higher one.
# policy sits above the stages whose settings it validates (each attack declares its own parameter
# model) and below those that act on a validated policy.
STAGES: list[tuple[str, ...]] = [
    ("naa_guard.errors", "naa_guard.version", "naa_guard.userfiles", "naa_guard.blanktext"),
    ("naa_guard.samples",),
    ("naa_guard.targets",),
    ("naa_guard.attacks",),
    ("naa_guard.policy",),
    ("naa_guard.scoring",),
    ("naa_guard.verdict",),
    ("naa_guard.tuning", "naa_guard.result"),
    ("naa_guard.reports",),
    ("naa_guard.audit",),
    ("naa_guard.launcher", "naa_guard.sweep", "naa_guard.init_policy", "naa_guard.demo", "naa_guard.loader"),
    ("naa_guard.cli", "naa_guard.__main__", "naa_guard"),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


MODULES = {**_modules("naa_guard"), **_modules("pytest_plugin")}


def _imports(path: Path) -> set[str]:
    """Return every naa_guard / pytest_plugin module that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from a.b import c" is module a.b.c when c is one, else a name from a.b
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _stage(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} belongs to no stage: add it to STAGES in {Path(__file__).name}"
    return best[0]


def _cycle() -> list[str] | None:
    """Return one import circle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_the_imports() -> None:
    """The checker itself works: it finds known edges (a checker that sees nothing passes everything)."""
    assert "naa_guard.errors" in GRAPH["naa_guard.policy.schema"] | GRAPH["naa_guard.policy.load"]
    assert "naa_guard.audit" in GRAPH["naa_guard.cli"]
    assert _stage("naa_guard.samples.folder") < _stage("naa_guard.scoring.runner") < _stage("naa_guard.verdict.gates") < _stage("naa_guard.reports.html")


def test_no_import_circles() -> None:
    assert _cycle() is None, "import circle: " + " -> ".join(_cycle() or [])


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("naa_guard")))
def test_no_lower_stage_imports_a_higher_one(module: str) -> None:
    upward = sorted(dep for dep in GRAPH[module] if dep.startswith("naa_guard") and _stage(dep) > _stage(module))
    assert not upward, f"{module} (stage {_stage(module)}) imports higher stages: {upward}"


def test_the_library_never_imports_pytest_or_the_plugin() -> None:
    offenders = [name for name in MODULES if name.startswith("naa_guard") and "pytest_plugin" in " ".join(GRAPH[name])]
    assert not offenders
    for name, path in MODULES.items():
        if name.startswith("naa_guard"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            assert "pytest" not in imported and "_pytest" not in imported, f"{name} imports pytest"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (limit about 400): split it by concern"


def test_top_level_holds_only_the_faces_and_shared_pieces() -> None:
    """Stage code lives in its stage's package; the top level keeps the modules DESIGN.md names."""
    top = {path.stem for path in (ROOT / "naa_guard").glob("*.py")}
    assert top <= {"__init__", "__main__", "audit", "cli", "demo", "errors", "init_policy", "launcher", "loader", "result", "sweep", "tuning", "userfiles", "blanktext", "version"}, top
