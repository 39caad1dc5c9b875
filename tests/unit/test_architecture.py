"""The house rules, checked on the source: imports run one way (no cycle, counting imports inside functions),
no function longer than a screen, no test hooks in production code, a command that does not hide a broken module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "dogbreed"

# The core: what every layer may import; it imports no layer above it.
CORE = {"dogbreed", "accel", "checkpoint", "common", "data", "distributed", "dogness", "env", "errors", "explain",
        "features", "local", "metrics", "images", "models", "presets", "probe", "sample"}
LAYERS = ("cli", "commands", "launch", "insight", "serving", "train", "training", "toolkit_entry", "bench")

MAX_LINES = 80
# Functions allowed to be longer, by qualified name, each with its reason.
LONG_FUNCTIONS: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _known(name: str, known: set[str]) -> str | None:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def imported_modules(name: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that ``source`` imports anywhere: at the top, inside functions, under ``if``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # `from . import train` names a module; `from .models import build` names something in one
            targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix for alias in node.names]
        else:
            continue
        found.update(m for m in (_known(t, known) for t in targets if t.split(".")[0] == "dogbreed") if m and m != name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported_modules(name, path.read_text(), path.name == "__init__.py", known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as the list of its modules, or None (depth-first search, colouring the modules on the path)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def layer(name: str) -> str:
    parts = name.split(".")
    return "dogbreed" if len(parts) == 1 else parts[1]


def group(name: str) -> str:
    """What a package-level cycle counts as one node: a subpackage (``dogbreed.training``), the top-level core
    modules together (``core``: ``dogbreed.data``, ``dogbreed.models`` ...), or a top-level entry module
    (``dogbreed.cli``, ``dogbreed.train``, ``dogbreed.toolkit_entry``) on its own."""
    top = layer(name)
    return "core" if top in CORE else f"dogbreed.{top}"


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto packages: an edge where any module of one imports any module of the other."""
    folded: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = folded.setdefault(group(source), set())
        edges.update(group(t) for t in targets if group(t) != group(source))
    return folded


def wrong_way_edges(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if layer(target) == "cli" or (layer(target) == "commands" and layer(source) not in ("cli", "commands")):
                wrong.append(f"{source} -> {target} (nothing imports the command)")
            elif layer(source) in CORE and layer(target) in LAYERS:
                wrong.append(f"{source} -> {target} (the core imports no layer above it)")
    return wrong


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    known = {"dogbreed", "dogbreed.cli", "dogbreed.models", "dogbreed.serving", "dogbreed.serving.client"}
    source = "from . import content_types\nfrom ..models import build\n\ndef f():\n    from ..cli import CLIError\n"
    assert imported_modules("dogbreed.serving.client", source, False, known) == {"dogbreed.cli", "dogbreed.models",
                                                                                 "dogbreed.serving"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert wrong_way_edges({"dogbreed.serving.client": {"dogbreed.cli"}, "dogbreed.data": {"dogbreed.launch.config"}}) == [
        "dogbreed.data -> dogbreed.launch.config (the core imports no layer above it)",
        "dogbreed.serving.client -> dogbreed.cli (nothing imports the command)",
    ]


def test_the_package_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "dogbreed.serving.engine" in graph["dogbreed.serving.handler"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_packages_import_each_other_without_a_cycle():
    """No arrow runs back up between packages: training, insight, launch, serving and the top-level modules. A
    cycle between modules of two packages is caught above; this one also catches training -> insight -> training
    through different modules."""
    folded = package_graph(import_graph())
    cycle = find_cycle(folded)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)
    assert {"dogbreed.training", "dogbreed.insight", "dogbreed.launch", "dogbreed.serving", "core"} <= set(folded)


def test_the_package_graph_folds_modules_onto_their_packages():
    graph = {"dogbreed.training.entry": {"dogbreed.training.hooks", "dogbreed.data"},
             "dogbreed.insight.job_outputs": {"dogbreed.training.hooks"},
             "dogbreed.training.hooks": {"dogbreed.insight.rules"}, "dogbreed.data": {"dogbreed.errors"}}
    folded = package_graph(graph)
    assert folded == {"dogbreed.training": {"dogbreed.insight", "core"}, "dogbreed.insight": {"dogbreed.training"},
                      "core": set()}
    assert find_cycle(folded) == ["dogbreed.insight", "dogbreed.training", "dogbreed.insight"]


MAX_MODULE_LINES = 500


def test_no_module_is_longer_than_a_few_minutes_of_reading():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_imports_run_one_way():
    assert wrong_way_edges(import_graph()) == []


def long_functions() -> list[str]:
    found = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            qualified, parent = [node.name], parents.get(node)
            while parent is not None:
                if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    qualified.insert(0, parent.name)
                parent = parents.get(parent)
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{name}.{'.'.join(qualified)} ({lines} lines)")
    return found


def test_no_function_is_longer_than_a_screen():
    offenders = [f for f in long_functions() if f.rsplit(" (", 1)[0] not in LONG_FUNCTIONS]
    assert offenders == [], f"functions over {MAX_LINES} lines: {offenders}"


def test_every_exemption_is_still_needed():
    still_long = {f.rsplit(" (", 1)[0] for f in long_functions()}
    assert set(LONG_FUNCTIONS) <= still_long, "an exempted function is short now: drop it from LONG_FUNCTIONS"


@pytest.mark.parametrize("needle", ["FAIL_AFTER", "fail_after"])
def test_no_fault_switches_in_production_code(needle):
    assert [str(p) for p in PACKAGE.rglob("*.py") if needle in p.read_text()] == []


def test_the_command_does_not_hide_a_broken_module():
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    caught = [ast.unparse(handler.type) for handler in ast.walk(tree) if isinstance(handler, ast.ExceptHandler) and handler.type]
    assert not [c for c in caught if "ImportError" in c or "ModuleNotFoundError" in c]
