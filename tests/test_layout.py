"""The shape of the codebase a newcomer meets: the public names, a package laid out by role
without import cycles, a thin app, a README that is a page, and a tree light enough to clone.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "afiqa"

PUBLIC = {"Predictor", "ScoreResult", "ModelConfig", "build_model", "evaluate", "explain", "overlay", "__version__"}
ROLES = {"model", "runtime", "io", "distributed", "app"}


def test_the_public_names_stay():
    import afiqa

    assert set(afiqa.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(afiqa, name) is not None, name
    metrics = importlib.import_module("afiqa.metrics")
    for fn in ("plcc", "srocc", "krocc", "rmse", "evaluate"):
        assert callable(getattr(metrics, fn)), fn
    from afiqa.cli import main

    assert callable(main)


def test_importing_afiqa_loads_neither_tensorflow_nor_the_network():
    code = "import sys, afiqa; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; " \
           "assert 'huggingface_hub' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_package_is_laid_out_by_role():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert ROLES <= folders, ROLES - folders
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert len(top) <= 8, f"modules left on the top level: {sorted(top)}"
    assert not (PACKAGE / "bench.py").exists(), "benchmark harnesses live in benchmarks/, not the installed package"


def _imports(path: Path) -> set[str]:
    """afiqa modules ``path`` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("afiqa")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("afiqa") and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_no_import_cycles_at_module_level():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                # a package importing its own submodule is not a cycle unless the submodule imports it back
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_app_entry_point_is_thin_and_each_function_short():
    assert len((ROOT / "app.py").read_text().splitlines()) <= 80
    for path in [ROOT / "app.py", *(PACKAGE / "app").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 90, f"{path.name}:{node.name} is {length} lines"


def test_the_readme_is_a_page_and_the_tree_is_light():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert "(docs/screenshot.png)" in readme and (ROOT / "docs" / "screenshot.png").stat().st_size < 400_000
    for placeholder in ("SPEED_FIGURE", "MEMORY_FIGURE", "TODO"):
        assert placeholder not in readme
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")  # a copy without .git (a Space build): nothing tracked to count
    size = sum((ROOT / f).stat().st_size for f in tracked.stdout.split("\0") if f and (ROOT / f).is_file())
    assert size <= 60 * 2**20, f"tracked files {size / 2**20:.1f} MiB"
    weights = {p.name for p in (ROOT / "weights").iterdir()}
    assert len({n.split(".")[0].removesuffix("-int8") for n in weights}) == 1, f"one model in weights/: {weights}"
