"""The engine's layering, read from its source: unwinder never imports
collector, no module of it imports itself back through others, and the
symbol table (which every walk needs) brings neither pyelftools nor ctypes."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def engine_imports() -> dict[str, set[str]]:
    """module -> the modules it imports (a package is its __init__; `from
    . import x` is the submodule x when there is one, else the package)."""
    files = {}
    for path in (ROOT / "unwinder").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                    if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in files else target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[name] = found
    return graph


def test_unwinder_never_imports_collector():
    offenders = {name for name, found in engine_imports().items()
                 if any(f == "collector" or f.startswith("collector.") for f in found)}
    assert offenders == set()


def test_no_import_cycle_in_unwinder():
    graph = engine_imports()
    edges = {name: {f for f in found if f in graph and f != name} for name, found in graph.items()}
    cycles, done = [], set()

    def visit(name, path):
        if name in path:
            cycles.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for dep in sorted(edges[name]):
            visit(dep, path + [name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])
    assert cycles == []


def test_the_symbol_table_imports_no_heavy_module():
    code = ("import sys, unwinder.modules, unwinder.symbols.symtab; "
            "print(sorted(m for m in ('elftools', 'ctypes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
