"""Data flow: traces -> dataset -> models -> training -> serving -> server -> cli.

Each layer imports only the layers before it (type-only imports included), there is no import
circle, no module grows past what one reader holds in mind (~400 lines), and a module's name
says its one job: two modules share a name only for the same role in sibling folders (each
worker's ``protocol``, ``runner`` and ``worker``). Each worker process is laid out as messages,
parent and child under those same three names (``WORKERS``, ``ROLES``). Tests import shared
code from ``tests/helpers/`` only, never from another test module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ai_lsp_tune"
TESTS = Path(__file__).resolve().parent
# Top-level modules (prompts, schema, config, wire, ...) are layer 0, below everything.
LAYERS = {
    "traces": 1,
    "dataset": 2,
    "decoding": 2,
    "models": 3,
    "training": 4,
    "serving": 5,
    "server": 6,
    "cli": 7,
}
MAX_LINES = 420
# Each worker process, laid out the same way under the same three names: its messages (versioned,
# one ``LineReader`` per channel), the parent side that starts, follows and stops it through the
# one ``supervisor`` (``python -m``, SIGTERM then SIGKILL, protocol check), and the child.
ROLES = {"messages": "protocol", "parent": "runner", "child": "worker"}
WORKERS = ("dataset", "training", "serving")
# The names a worker's modules share with its siblings'.
SHARED_ROLES = set(ROLES.values())


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports anywhere in its body (lazy and type-only too)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "ai_lsp_tune":
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 2 else 0


def test_no_module_imports_a_later_layer() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert upward == []


def test_there_is_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


def test_no_module_is_longer_than_one_reader_holds_in_mind() -> None:
    long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_a_module_name_means_one_thing() -> None:
    """``server/protocol.py`` beside ``serving/protocol.py`` sent readers to the wrong file."""
    folders: dict[str, set[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.stem not in ("__init__", "__main__"):
            folders.setdefault(path.stem, set()).add(path.parent)
    packages = {path.parent.name for path in PACKAGE.rglob("__init__.py")} - {PACKAGE.name}
    twice = {
        name: sorted(str(folder.relative_to(PACKAGE.parent)) for folder in found)
        for name, found in folders.items()
        if len(found) > 1
        and (name not in SHARED_ROLES or len({folder.parent for folder in found}) > 1)
    }
    assert twice == {}
    assert sorted(set(folders) & packages) == []  # a module named like a package


def _test_imports(path: Path) -> set[str]:
    """The ``tests`` modules ``path`` imports, relative imports (``from . import x``) resolved."""
    package = path.parent.relative_to(TESTS.parent).parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.update([base, *(f"{base}.{alias.name}" for alias in node.names)])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("tests.")}


def test_tests_share_code_through_helpers_only() -> None:
    """A test module imported by another runs its imports (and reads as a fixture file) twice."""
    crossing = {
        f"{path.relative_to(TESTS.parent)} -> {target}"
        for path in TESTS.rglob("*.py")
        for target in _test_imports(path)
        if not target.startswith("tests.helpers")
    }
    assert sorted(crossing) == []


def test_each_worker_is_messages_parent_and_child() -> None:
    """One supervisor for the three: the parent starts the child as ``python -m`` through
    ``supervisor.Child`` (never a process of its own), follows the messages module's versioned
    lines with it, and stops it with it."""
    graph, problems = _graph(), []
    for folder in WORKERS:
        package = f"ai_lsp_tune.{folder}"
        parent, child = f"{package}.{ROLES['parent']}", f"{package}.{ROLES['child']}"
        messages = f"{package}.{ROLES['messages']}"
        if "LineReader(" not in (PACKAGE / folder / f"{ROLES['messages']}.py").read_text():
            problems.append(f"{folder}: no versioned LineReader in {messages}")
        if not {messages, "ai_lsp_tune.supervisor"} <= graph[parent]:
            problems.append(f"{parent} does not use {messages} and ai_lsp_tune.supervisor")
        parent_source = (PACKAGE / folder / f"{ROLES['parent']}.py").read_text()
        if f'"{child}"' not in parent_source:
            problems.append(f"{parent} does not start python -m {child}")
        if "create_subprocess" in parent_source or "Popen" in parent_source:
            problems.append(f"{parent} starts a process itself, not through supervisor.Child")
        if (
            'if __name__ == "__main__":'
            not in (PACKAGE / folder / f"{ROLES['child']}.py").read_text()
        ):
            problems.append(f"{child} is not runnable with python -m")
        if messages not in graph[child]:
            problems.append(f"{child} does not speak {messages}")
    assert problems == []


def test_sibling_workers_use_the_same_three_names() -> None:
    """Every process the package starts as ``python -m`` (the CLI aside) is a worker named like
    its siblings: ``serving`` once said ``client`` / ``host`` where the others say ``runner`` /
    ``worker``, and a reader looked for the model host's parent in the wrong file."""
    children = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text() and path.parent.name != "cli"
    }
    expected = {f"{folder}/{ROLES['child']}.py" for folder in WORKERS}
    assert children == expected
    missing = [
        f"{folder}/{name}.py"
        for folder in WORKERS
        for name in ROLES.values()
        if not (PACKAGE / folder / f"{name}.py").exists()
    ]
    assert missing == []
