"""The floor plan holds: imports go down the layers of docs/architecture.md, nothing imports in
a circle, modules stay small and CLI commands stay thin.

The import graph is read with ``ast`` from the sources (no import is executed), and every
import counts: module level, function-local and ``if TYPE_CHECKING:`` alike.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchrun"
ARCHITECTURE_DOC = ROOT / "docs" / "architecture.md"
MAX_MODULE_LINES = 400
MAX_COMMAND_LINES = 40  # a click command's function, ``def`` line to its last line

# Where the emulator may write to the terminal and exit: its own command.
TERMINAL_ALLOWED_PACKAGES = {"cli", "emulator"}

ROOT_MODULE = "batchrun"  # batchrun/__init__.py: __version__ only, importable from anywhere
ENTRY_MODULE = "batchrun.__main__"  # ``python -m batchrun``: calls the CLI, above every layer


def layer_order() -> list[str]:
    """The layers, bottom-up, as listed in docs/architecture.md ("1. `core` — ...")."""
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\.\s+`([a-z_]+)/?`", section, flags=re.MULTILINE)


def modules() -> dict[str, Path]:
    """Dotted module name → source file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(batchrun module, line) for every import anywhere in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _closest(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if candidate in known else _closest(base, known)), node.lineno


def _closest(name: str, known: set[str]) -> str:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> dict[str, dict[str, int]]:
    """module → {batchrun module it imports: first line}."""
    found = modules()
    known = set(found)
    graph: dict[str, dict[str, int]] = {}
    for module, path in found.items():
        edges = graph.setdefault(module, {})
        for target, line in imported(module, path, known):
            if target.startswith(ROOT_MODULE) and target != module:
                edges.setdefault(target, line)
    return graph


def layer_of(module: str) -> str | None:
    """``batchrun.store.index`` → ``store``; the root module has no layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- the tests -----------------------------------------------------------------------------
def test_the_doc_lists_every_layer_and_only_real_ones() -> None:
    order = layer_order()
    assert order, f"no layer list found under '## Layers' in {ARCHITECTURE_DOC}"
    assert len(order) == len(set(order)), f"a layer is listed twice: {order}"
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    stray = sorted(layer_of(m) or m for m in modules()
                   if m not in (ROOT_MODULE, ENTRY_MODULE) and layer_of(m) not in packages)
    assert not stray, f"modules outside every layer package (move them into one): {stray}"
    assert set(order) == packages, (
        f"docs/architecture.md lists {sorted(set(order) - packages)} that do not exist, "
        f"and misses {sorted(packages - set(order))}"
    )


def test_every_import_goes_down_the_layers() -> None:
    rank = {layer: at for at, layer in enumerate(layer_order())}
    wrong = []
    for module, edges in import_graph().items():
        source = layer_of(module)
        if source is None:
            assert not edges, f"{ROOT_MODULE}/__init__.py must import nothing of batchrun"
            continue
        if module == ENTRY_MODULE:
            assert {layer_of(target) for target in edges} <= {"cli"}, (
                f"{ENTRY_MODULE} imports only the cli: {sorted(edges)}")
            continue
        for target, line in edges.items():
            layer = layer_of(target)
            if layer is None or layer == source:
                continue
            if rank.get(layer, len(rank)) >= rank.get(source, -1):
                wrong.append(f"{modules()[module].relative_to(ROOT)}:{line} imports {target} "
                             f"({source} may not import {layer})")
    assert not wrong, "imports that climb the layers:\n" + "\n".join(wrong)


def test_only_the_cli_imports_the_emulator() -> None:
    wrong = [f"{module} imports {target}"
             for module, edges in import_graph().items()
             for target in edges
             if layer_of(target) == "emulator" and layer_of(module) not in ("emulator", "cli")]
    assert not wrong, wrong


def test_no_import_cycle_between_modules() -> None:
    graph = {module: set(edges) for module, edges in import_graph().items()}
    assert not cycles(graph), f"import cycles between modules: {cycles(graph)}"


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for module, edges in import_graph().items():
        source = layer_of(module)
        if source is None:
            continue
        targets = graph.setdefault(source, set())
        targets.update(layer for target in edges
                       if (layer := layer_of(target)) is not None and layer != source)
    assert not cycles(graph), f"import cycles between packages: {cycles(graph)}"


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {relative(path): len(path.read_text(encoding="utf-8").splitlines())
             for path in modules().values()}
    large = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines (split them): {large}"


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name in ("command", "group"):
            return True
    return False


def click_commands() -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for path in modules().values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_click_command(node):
                yield relative(path), node


def test_the_cli_commands_are_found() -> None:
    names = {node.name for path, node in click_commands() if path.startswith("batchrun/cli/")}
    assert {"cli", "run", "estimate", "status", "export", "report"} <= names


def test_every_command_function_is_thin() -> None:
    long = {f"{path}:{node.lineno} {node.name}": lines
            for path, node in click_commands()
            if (lines := (node.end_lineno or node.lineno) - node.lineno + 1) >= MAX_COMMAND_LINES}
    assert not long, (f"command functions of {MAX_COMMAND_LINES} lines or more (move the work "
                      f"into plan/ or reporting/): {long}")


_TERMINAL_CALLS = {("sys", "exit"), ("sys", "stderr"), ("sys", "stdout"), ("click", "echo"),
                   ("click", "confirm"), ("click", "secho")}


def test_only_the_cli_talks_to_the_terminal() -> None:
    wrong = []
    for module, path in modules().items():
        name = relative(path)
        if layer_of(module) in TERMINAL_ALLOWED_PACKAGES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                wrong.append(f"{name}:{node.lineno} print()")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and (node.value.id, node.attr) in _TERMINAL_CALLS):
                wrong.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert not wrong, "only cli/ prints, asks and exits:\n" + "\n".join(wrong)
