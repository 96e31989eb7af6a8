"""The package's layout is its architecture: no import circle, small folders and modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import labkit

ROOT = Path(labkit.__file__).resolve().parent
MAX_TOP_MODULES = 8
MAX_PACKAGE_MODULES = 12
MAX_LINES = 400


def module_name(path: Path) -> str:
    """labkit/a/b.py -> labkit.a.b; labkit/a/__init__.py -> labkit.a."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imported(module: str, names: list[str]) -> set[str]:
    """The labkit modules an import runs: each package on the way, and imported submodules."""
    parts = module.split(".")
    found = {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    found |= {f"{module}.{n}" for n in names}
    return found & MODULES.keys()


def import_graph() -> dict[str, set[str]]:
    """Every import statement of every module (lazy ones in functions too), as edges."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("labkit."):
                        edges |= imported(alias.name, [])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labkit"):
                edges |= imported(node.module, [a.name for a in node.names])
        # a module's own packages are run before it: importing them is no edge
        graph[name] = {e for e in edges if e != name and not name.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as the list of modules on it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_circle_counting_every_import_statement():
    assert find_cycle(import_graph()) is None


def test_the_circle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("lower, upper", [
    ("labkit.files", ("labkit.stats", "labkit.lora", "labkit.generate", "labkit.embeddings")),
    ("labkit.safety", ("labkit.files", "labkit.stats", "labkit.lora", "labkit.generate")),
    ("labkit.identify", ("labkit.files", "labkit.stats", "labkit.lora", "labkit.generate")),
])
def test_lower_layers_never_import_upper_ones(lower, upper):
    graph = import_graph()
    reached = {e for name, edges in graph.items() if name.startswith(lower) for e in edges}
    assert not {e for e in reached if e.startswith(upper)}


def test_top_level_holds_at_most_eight_modules():
    assert len(list(ROOT.glob("*.py"))) <= MAX_TOP_MODULES


def test_each_subpackage_is_small_and_says_its_idea():
    for init in ROOT.rglob("__init__.py"):
        folder = init.parent
        if folder == ROOT:
            continue
        assert len(list(folder.glob("*.py"))) <= MAX_PACKAGE_MODULES, folder
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), folder


def test_no_module_is_over_400_lines():
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_tests_have_a_folder_per_subpackage():
    tests = Path(__file__).resolve().parent
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"panels", "zoo"}
    assert {p for p in packages if not (tests / p).is_dir()} == set()
