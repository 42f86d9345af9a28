"""The rules the layout keeps (ARCHITECTURE.md): modules of at most 500 lines, functions of at most 80, no import
cycles, and contracts that import nothing of the gateway. Read from the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "runtimes", "bench")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: the gateway's layers, bottom up: a module imports only from its own layer or those below (ARCHITECTURE.md)
LAYERS = (
    (
        "gateway.contracts",
        "gateway.errors",
        "gateway.hooks",
        "gateway.settings",
        "gateway.catalog",
        "gateway.architectures",
        "gateway.file_systems",
        "gateway.pythons",
        "gateway.nodes",
        "gateway.runtime_packages",
    ),
    ("gateway.isolation",),
    ("gateway.store",),
    ("gateway.execution",),
    ("gateway.observability", "gateway.changes", "gateway.events"),
    ("gateway.api", "gateway.app_keys"),
    ("gateway.app", "gateway.deploy", "gateway.shutdown", "gateway.__main__"),
)
#: what the runtimes (code that runs in environments and zygotes) may import of the gateway
RUNTIME_MAY_IMPORT = ("gateway.contracts", "gateway.isolation")


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports when it is imported: module-level statements only (an import inside a
    function, or under `if TYPE_CHECKING:`, runs later or never, so it cannot make a cycle at import time)."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = _sources("gateway", "runtimes")
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _top_level_imports(p, modules) for p in paths}


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources(*PACKAGES)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines() -> None:
    long = {
        f"{p.relative_to(ROOT)}:{f.name}": n
        for p in _sources(*PACKAGES, "tests")
        for f in _functions(ast.parse(p.read_text()))
        if (n := (f.end_lineno or f.lineno) - f.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize("path", _sources("gateway/contracts"), ids=lambda p: p.name)
def test_contracts_import_nothing_of_the_gateway(path: Path) -> None:
    """Both sides of a boundary import its contract: it must stay light, and must not pull in either side."""
    graph = _graph()
    assert {m for m in graph[_module_name(path)] if not m.startswith("gateway.contracts")} == set()


def _layer(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module`'s place (the package itself: a docstring, 0)."""
    if module == "gateway":
        return 0
    best, where = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, where = len(name), index
    assert where >= 0, f"{module} has no layer in LAYERS"
    return where


def test_the_gateway_imports_only_downwards() -> None:
    """api -> observability/changes -> execution -> store -> isolation -> contracts; never the other way."""
    upward = {
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module.startswith("gateway")
        for dep in deps
        if _layer(dep) > _layer(module)
    }
    assert upward == set()


def test_runtimes_import_only_contracts_and_isolation() -> None:
    """What runs in a zygote or an environment imports nothing of the gateway's server side."""
    imports = {
        f"{module} -> {dep}"
        for module, deps in _graph().items()
        if module.startswith("runtimes")
        for dep in deps
        if dep.startswith("gateway") and dep != "gateway" and not dep.startswith(RUNTIME_MAY_IMPORT)
    }
    assert imports == set()


def depth() -> int:
    """The import graph's depth: the longest chain of module-level imports (`python tests/test_architecture.py`)."""
    graph = _graph()
    memo: dict[str, int] = {}

    def longest(node: str) -> int:
        if node not in memo:
            memo[node] = 0
            memo[node] = 1 + max((longest(d) for d in graph[node]), default=0)
        return memo[node]

    return max(longest(m) for m in graph)


if __name__ == "__main__":
    print("import graph depth:", depth())
