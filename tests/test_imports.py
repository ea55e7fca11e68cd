"""The import graph of aiows: every module in a layer, imports point down, no cycles.

The graph is read from the source (``ast``), not from ``sys.modules``: every import
counts, at module level, under ``TYPE_CHECKING`` or inside a function, because a lazy
import that points up is still a dependency that points up.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiows"

#: The layers of DESIGN.md, bottom up. A module may import from its own layer and the
#: layers below it, never from a layer above. A new module must be placed here.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "leaves",
        {
            "aiows.message",
            "aiows.exceptions",
            "aiows.config",
            "aiows.loop",
            "aiows.version",
            "aiows.state",
            "aiows.heap",
        },
    ),
    ("http", {"aiows.http"}),
    ("frames and the wsproto adapter", {"aiows.frames", "aiows.adapter", "aiows.extensions"}),
    ("handshake", {"aiows.handshake"}),
    (
        "protocol",
        {
            "aiows.protocol",
            "aiows.opening",
            "aiows.outbox",
            "aiows.reading",
            "aiows.pings",
            "aiows.heartbeat",
        },
    ),
    ("connection and the hub's member interface", {"aiows.connection", "aiows.member"}),
    ("server and client", {"aiows.server", "aiows.client", "aiows.proxy", "aiows.sync"}),
    (
        "hub",
        {
            "aiows.hub",
            "aiows.presence",
            "aiows.replay",
            "aiows.slow",
            "aiows.hubstats",
            "aiows.history",
            "aiows.resume",
            "aiows.backends",
            "aiows.backends.wire",
            "aiows.backends.memory",
            "aiows.backends.redis",
        },
    ),
    ("ASGI", {"aiows.asgi", "aiows.asgi.app", "aiows.asgi.connection", "aiows.uvicorn"}),
    (
        "apps and face",
        {
            "aiows.metrics",
            "aiows.cli",
            "aiows.console",
            "aiows.workers",
            "aiows.compat",
            "aiows.testing",
            "aiows.apps",
            "aiows.apps.chat",
            "aiows.apps.echo",
            "aiows.apps.broadcast",
        },
    ),
    ("the package", {"aiows", "aiows.__main__"}),
]
RANK = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom) -> Iterator[str]:
    """Yield the aiows modules an ``ImportFrom`` reads (``from . import x`` may be either
    the submodule ``x`` or a name the package defines)."""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    if node.level:
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join([*base, *(node.module.split(".") if node.module else [])])
    else:
        target = node.module or ""
    if target != "aiows" and not target.startswith("aiows."):
        return
    for alias in node.names:
        if f"{target}.{alias.name}" in MODULES:
            yield f"{target}.{alias.name}"
        else:
            yield target


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """Yield ``(imported aiows module, lazy)``: lazy when made inside a function."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    lazy_nodes = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.ImportFrom):
            for target in _resolve(module, node):
                yield target, lazy
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "aiows" or alias.name.startswith("aiows."):
                    yield alias.name, lazy


def _graph() -> dict[str, set[str]]:
    """Return who imports whom, among aiows modules.

    Left out: a package's lazy import of one of its own submodules (``backends.from_url``
    imports ``backends.redis`` when asked for one). It runs after both are loaded, and
    the submodule importing its package's interface is the plug-in's ordinary shape.
    """
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges = graph.setdefault(module, set())
        for target, lazy in _imports(module):
            own_child = target.startswith(module + ".")
            if target != module and not (lazy and own_child):
                edges.add(target)
    return graph


def _external(module: str) -> set[str]:
    """Return the top-level names of what ``module`` imports from outside aiows."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"aiows"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(set(MODULES) - set(RANK))
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_there_are_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_imports_point_down() -> None:
    upward = [
        f"{module} ({LAYERS[RANK[module]][0]}) imports {target} ({LAYERS[RANK[target]][0]})"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if module in RANK and target in RANK and RANK[target] > RANK[module]
    ]
    assert upward == []


def test_the_message_type_is_a_leaf() -> None:
    assert _graph()["aiows.message"] == set()


@pytest.mark.parametrize(
    "module", ["aiows.backends.wire", "aiows.history", "aiows.resume", "aiows.backends"]
)
def test_the_hub_data_modules_do_not_load_wsproto(module: str) -> None:
    """The wire format and history name ``Message`` without loading the protocol."""
    graph, seen, todo = _graph(), set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(graph.get(current, ()))
    assert not {m for m in seen if m in MODULES and "wsproto" in _external(m)}, sorted(seen)


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
