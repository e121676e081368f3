"""The package's architecture, checked: one door into the engine, no import cycles, no module
reading another module's private attributes, no implementation in a large ``__init__``."""

from __future__ import annotations

import ast
from pathlib import Path

import litegate

ROOT = Path(litegate.__file__).parent
ENGINE = "litegate._engine"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str) -> set[str]:
    """Every litegate module ``name`` imports (anywhere in it: TYPE_CHECKING and function-level
    imports count too)."""
    tree = ast.parse(MODULES[name].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("litegate")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("litegate"):
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != name}


def test_no_import_cycles() -> None:
    graph = {name: _imports(name) for name in MODULES}
    # A package's __init__ importing its own submodules is how packages work: not a cycle
    # when a submodule imports a sibling (Python resolves that to the sibling itself).
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_one_door_into_the_engine() -> None:
    """Outside the engine package, modules import only the package itself (its interface),
    never its internal modules."""
    offenders = {
        name: sorted(m for m in _imports(name) if m.startswith(ENGINE + "."))
        for name in MODULES
        if not name.startswith(ENGINE)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def _private_names_defined(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_")}


def test_no_module_reads_another_modules_private_attributes() -> None:
    """``x._name`` is allowed only where ``_name`` belongs to the same module (its own
    classes' fields and methods); ``self._name`` may also be a base class's protected
    member."""
    offenders: list[str] = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = _private_names_defined(tree)
        stdlib = {  # sys._getframe and the like: documented, and not litegate's
            (a.asname or a.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for a in node.names
            if not a.name.startswith("litegate")
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and not (
                    isinstance(node.value, ast.Name) and node.value.id in {"self", "cls", *stdlib}
                )
            ):
                offenders.append(f"{name}:{node.lineno} .{node.attr}")
    assert offenders == []
