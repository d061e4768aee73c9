"""The package's layout shows its architecture: data flows one way, and no module imports one that imports it.

Every ``import`` statement of every module is read from the source (those inside
functions and under ``TYPE_CHECKING`` included), and the graph of imports between
jaxtrack's own modules must have no cycle. Its layers, from the bottom, are what
the closing note of the redesign lists; the checks below pin the ones the one-door
rule depends on.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

SOURCE = pathlib.Path(__file__).resolve().parents[1] / "src" / "jaxtrack"


def _module_name(path: pathlib.Path) -> str:
    parts = ["jaxtrack", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in SOURCE.rglob("*.py")}


def _imports(name: str, path: pathlib.Path) -> Iterator[str]:
    """The jaxtrack modules ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            for alias in node.names:
                # ``from jaxtrack import run`` imports the module jaxtrack.run; ``from x import name`` imports x.
                yield from _resolve(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)


def _resolve(module: str) -> Iterator[str]:
    if module == "jaxtrack" or module.startswith("jaxtrack."):
        while module not in MODULES and "." in module:
            module = module.rsplit(".", 1)[0]
        yield module


GRAPH = {name: sorted(set(_imports(name, path)) - {name}) for name, path in MODULES.items()}


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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


def layers(graph: dict[str, list[str]] = GRAPH) -> dict[str, int]:
    """Each module's layer: 0 for a module that imports none of the package, else one above its highest import."""
    depth: dict[str, int] = {}

    def layer(node: str) -> int:
        if node not in depth:
            depth[node] = 0  # a cycle would read as 0 here; the test below rules cycles out
            depth[node] = 1 + max((layer(target) for target in graph[node]), default=-1)
        return depth[node]

    for node in graph:
        layer(node)
    return depth


def test_no_module_imports_a_module_that_imports_it() -> None:
    assert _cycles(GRAPH) == []


def test_no_module_inside_the_package_imports_the_package_itself() -> None:
    importers = [name for name, targets in GRAPH.items() if "jaxtrack" in targets and name != "jaxtrack"]
    assert importers == []


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("jaxtrack.values", "jaxtrack.pipeline"),  # values know nothing of how they travel
        ("jaxtrack.pipeline", "jaxtrack.run"),  # the pipeline knows no lifecycle...
        ("jaxtrack.pipeline", "jaxtrack.trackers"),  # ...and no Tracker class (a protocol suffices)
        ("jaxtrack.run", "jaxtrack.trackers"),  # the lifecycle is below the trackers whose doors use it
        ("jaxtrack.trackers", "jaxtrack.api"),  # backends never reach up to the module functions
        ("jaxtrack.store", "jaxtrack.api"),
        ("jaxtrack.api", "jaxtrack.ingraph"),  # the module functions are below jit and jit_log...
        ("jaxtrack.api", "jaxtrack.callbacks"),  # ...and the callbacks
    ],
)
def test_data_flows_one_way(lower: str, higher: str) -> None:
    def within(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    upward = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if within(name, lower)
        for target in targets
        if within(target, higher)
    ]
    assert upward == []


def test_the_layers_put_the_api_above_the_pipeline_and_the_backends() -> None:
    depth = layers()
    assert depth["jaxtrack.errors"] < depth["jaxtrack.values"] < depth["jaxtrack.pipeline"]
    assert depth["jaxtrack.pipeline"] < depth["jaxtrack.run"] < depth["jaxtrack.trackers.base"]
    assert depth["jaxtrack.trackers.base"] < depth["jaxtrack.trackers.composite"] < depth["jaxtrack.api"]
    assert depth["jaxtrack.api"] < depth["jaxtrack.ingraph.tracked"] < depth["jaxtrack.callbacks.report"]
    assert depth["jaxtrack"] == max(depth.values())  # the top level only re-exports
