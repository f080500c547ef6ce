"""The project's import graph, read from its source files (nothing is imported): which project
modules each module imports anywhere in its body, and the files a piece of code consists of.
The architecture test checks the graph's shape; provenance keys caches and runs by the files."""
from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence


def project_modules(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name -> its file, for every .py file under the packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> list[str]:
    """The project modules an import statement names (the longest existing prefix of each)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".")
        if node.level:
            package = base if modules[module].name == "__init__.py" else base[:-1]
            base = package[:len(package) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        names = [target] + [f"{target}.{a.name}" for a in node.names]
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.append(name)
    return found


def import_graph(root: Path, packages: Sequence[str]) -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its body (a package's own parents left
    out: importing a submodule always runs them)."""
    modules = project_modules(root, packages)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        stat = path.stat()
        for node in _import_statements(str(path), stat.st_mtime_ns, stat.st_size):
            graph[module] |= {t for t in imported_modules(module, node, modules)
                              if t != module and not module.startswith(t + ".")}
        graph.setdefault(module, set())
    return dict(graph)


@functools.lru_cache(maxsize=None)
def _import_statements(path: str, mtime_ns: int, size: int) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """A file's import statements, parsed once per version of the file (its mtime and size)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    return tuple(node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def source_files(entries: Iterable[str], root: Path, packages: Sequence[str]) -> list[Path]:
    """Every file that running `entries` may execute: the modules they import, transitively,
    with each module's parent packages (their __init__ runs first)."""
    graph = import_graph(root, packages)
    modules = project_modules(root, packages)
    unknown = [e for e in entries if e not in modules]
    if unknown:
        raise ValueError(f"not modules under {root}: {', '.join(unknown)}")
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph[module])
        todo.extend(p for p in _parents(module) if p in modules)
    return sorted(modules[m] for m in seen)
