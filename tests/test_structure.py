"""The package's shape: stages import downward only (no cycles), functions stay short, and the thin edges stay
thin (``import bertfit`` loads no torch; the CLI answers --help without the heavy libraries)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bertfit

PACKAGE = Path(bertfit.__file__).parent
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.glob("*.py"))}


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.Module, names: set[str]) -> set[str]:
    """The bertfit modules ``tree`` imports at any depth (functions too), except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import x
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertfit."):
            found.add(node.module.split(".")[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(tree, set(modules)) - {name} for name, tree in modules.items() if name != "__init__"}


def test_no_import_cycle_among_the_modules():
    graph = _graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []
    assert graph["model"] >= {"card", "features"} and "train" not in graph["model"]  # the graph is really read


def test_lower_stages_never_import_the_ones_above():
    graph = _graph()
    # data -> features -> train -> validate -> save -> predict/serve/export: none of these reaches back up.
    below = {
        "data": {"trainer", "validate", "pipeline", "model", "train", "save", "report", "serve", "export"},
        "features": {"trainer", "validate", "pipeline", "model", "train", "save", "report", "serve", "export"},
        "card": {"trainer", "validate", "pipeline", "model", "train", "save", "report", "explore"},
        "trainer": {"validate", "pipeline", "model", "train", "save", "report", "serve", "export"},
        "validate": {"pipeline", "model", "train", "save", "serve", "export"},
        "report": {"model", "train", "explore", "evaluate", "pipeline"},
        "explore": {"report", "train", "model", "pipeline"},
    }
    for module, forbidden in below.items():
        assert not graph[module] & forbidden, (module, graph[module] & forbidden)


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


_HELP = """
import sys
import bertfit
assert "torch" not in sys.modules, "import bertfit loaded torch"
from bertfit.cli import app
try:
    app(["train", "--help"])
except SystemExit as exit:
    assert exit.code == 0
heavy = sorted(m for m in ("torch", "transformers", "pandas", "sklearn", "matplotlib") if m in sys.modules)
assert heavy == [], heavy
"""


def test_import_bertfit_and_help_load_no_heavy_library():
    result = subprocess.run([sys.executable, "-c", _HELP], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--val-size" in result.stdout


def _extras() -> dict[str, list[str]]:
    from bertfit.config import read_config_file  # the project's own TOML reader (tomllib or tomli)

    return read_config_file(PACKAGE.parents[1] / "pyproject.toml")["project"]["optional-dependencies"]


def test_the_all_extra_is_every_optional_extra_and_dev_installs_them():
    extras = _extras()
    features = sorted(set(extras) - {"all", "dev"})
    assert extras["all"] == [f"bertfit[{','.join(features)}]"]  # pip install 'bertfit[all]' gets every feature
    # make test installs .[dev]: every feature's packages are there, so no test is skipped for a missing extra.
    missing = {name: sorted(set(extras[name]) - set(extras["dev"])) for name in features}
    assert {name: packages for name, packages in missing.items() if packages} == {}
