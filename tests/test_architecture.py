"""docs/architecture.md tells the truth: its layer table matches every import of the core, the
core imports no method or generator, the imports have no cycles, and the code stays small
(modules of about 500 lines at most, functions of 50, at most 6 parameters besides self/cls)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "gan_inversion_bench"
PREFIX = "gan_inversion_bench"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> set[str]:
    """Every gan_inversion_bench module ``path`` imports (lazy imports inside functions too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = _target(node, package)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t == PREFIX or t.startswith(PREFIX + "."):
                found.add(t)
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for t in imports_of(path):
            # ``from pkg import submodule`` names the submodule; ``from pkg.mod import f`` the module
            while t not in modules and "." in t and not t.startswith(f"{PREFIX}.methods") \
                    and not t.startswith(f"{PREFIX}.generators"):
                t = t.rpartition(".")[0]
            deps.add(t)
        graph[name] = deps - {name}
    return graph


def documented_layers() -> dict[str, int]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    layers = {}
    for layer, cells in re.findall(r"^\| (\d+) \| (.+) \|$", text, flags=re.M):
        for mod in re.findall(r"`([^`]+)`", cells):
            layers[mod if mod == PREFIX else f"{PREFIX}.{mod}"] = int(layer)
    return layers


def test_every_core_module_is_in_the_layer_table():
    layers, graph = documented_layers(), core_graph()
    assert set(graph) == set(layers), (sorted(set(graph) - set(layers)), sorted(set(layers) - set(graph)))


def test_imports_follow_the_layers():
    layers, graph = documented_layers(), core_graph()
    upward = [(m, d) for m, deps in graph.items() for d in deps if d in layers and layers[d] > layers[m]]
    assert not upward, f"imports from a higher layer than docs/architecture.md allows: {upward}"


def test_the_core_imports_no_method_or_generator():
    bad = [(m, d) for m, deps in core_graph().items() for d in deps
           if d.startswith((f"{PREFIX}.methods", f"{PREFIX}.generators"))]
    assert not bad, bad


def test_no_import_cycles():
    full = core_graph()  # parsed once: calling it per edge re-read every module (77 s of the suite)
    graph = {m: {d for d in deps if d in full} for m, deps in full.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, m, d])}")
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


#: public constructors whose keywords are a generator's documented options (read by ``--gen-opt``
#: from the signature, mirroring the upstream code's configuration); exempt from the parameter count
PUBLIC_OPTIONS = {"generators/stylegan2.py:StyleGAN2Generator.__init__", "generators/biggan.py:biggan_deep",
                  "generators/stylegan2.py:stylegan2"}


def _qualified_functions(tree: ast.Module):
    """(name, node) of every function, nested ones included; methods named ``Class.name``."""
    methods = {id(item): f"{node.name}.{item.name}" for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
               for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield methods.get(id(node), node.name), node


@pytest.mark.parametrize("folder", ["gan_inversion_bench", "methods", "generators"])
def test_code_stays_small(folder):
    """Modules <= 520 lines (about 500), functions <= 50 lines, <= 6 parameters besides self/cls
    (``generators/`` is installed as ``gan_inversion_bench.generators``: the same rules)."""
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 520:
            problems.append(f"{path.relative_to(ROOT)}: {len(source.splitlines())} lines")
        for name, node in _qualified_functions(ast.parse(source)):
            lines = node.end_lineno - node.lineno + 1
            a = node.args
            params = [x for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            where = f"{path.relative_to(ROOT)}:{node.lineno} {name}"
            if lines > 50:
                problems.append(f"{where}: {lines} lines")
            if len(params) > 6 and f"{path.relative_to(ROOT)}:{name}" not in PUBLIC_OPTIONS:
                problems.append(f"{where}: {len(params)} parameters")
    assert not problems, "\n".join(problems)


def test_benchmark_scripts_use_only_the_harness_public_api():
    """The scripts in benchmarks/ import the harness package, never its modules (architecture.md)."""
    private = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            private += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith(f"{PREFIX}.harness.")]
    assert not private, "\n".join(private)


def test_stop_and_status_import_without_the_metrics_and_the_harness_api_resolves():
    """``gib stop`` and ``gib status`` load harness.stop and harness.status alone: the orchestrator and the records
    (and with them torchmetrics and torchvision, seconds of import) come in on first use of their names."""
    code = ("import sys, gan_inversion_bench.harness.stop, gan_inversion_bench.harness.status\n"
            "print(sorted(m for m in ('torchmetrics', 'torchvision', 'gan_inversion_bench.metrics',\n"
            "      'gan_inversion_bench.harness.orchestrate') if m in sys.modules))\n"
            "from gan_inversion_bench import harness\n"
            "missing = [n for n in harness.__all__ if not hasattr(harness, n)]\n"
            "from gan_inversion_bench.harness import run\n"
            "print(missing, run is harness.run and run.__module__, callable(harness.observe))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines() == ["[]", "[] gan_inversion_bench.harness.orchestrate True"], done.stdout
