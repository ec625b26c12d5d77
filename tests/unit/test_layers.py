"""The layers, read from the source (../shared/DESIGN.md): unwinder never
imports collector; no import cycle in either; no library module imports a
command or the CLI; targets/ imports nothing of the agent but errors and
procfs; and the symbol table (which every walk needs) brings neither
pyelftools nor ctypes."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(*packages: str) -> dict[str, set[str]]:
    """module -> the modules it imports (a package is its __init__; `from
    . import x` is the submodule x when there is one, else the package)."""
    files = {}
    for path in (p for package in packages for p in (ROOT / package).rglob("*.py")):
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


def engine_imports() -> dict[str, set[str]]:
    return imports("unwinder")


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_unwinder_never_imports_collector():
    offenders = {name for name, found in engine_imports().items()
                 if any(f == "collector" or f.startswith("collector.") for f in found)}
    assert offenders == set()


def test_no_library_module_imports_a_command_or_the_cli():
    top = {"collector.cli", "collector.__main__"}
    offenders = {(name, f) for name, found in imports("collector").items()
                 if name not in top and not inside(name, "collector.commands")
                 for f in found if f in top or inside(f, "collector.commands")}
    assert offenders == set()


def test_commands_import_no_command():
    offenders = {(name, f) for name, found in imports("collector").items()
                 if inside(name, "collector.commands") for f in found
                 if inside(f, "collector.commands") and f.rpartition(".")[2] != "options"
                 and f != "collector.commands"}
    assert offenders == set()


def test_targets_import_only_errors_and_procfs_of_the_agent():
    allowed = {"collector.errors", "collector.targets"}
    offenders = {(name, f) for name, found in imports("collector").items()
                 if inside(name, "collector.targets") for f in found
                 if inside(f, "collector") and f not in allowed
                 and not inside(f, "collector.targets")}
    assert offenders == set()


def test_no_import_cycle():
    graph = imports("unwinder", "collector")
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
