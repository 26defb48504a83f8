"""No module imports from a layer above it (type-checking-only imports aside): the package's layering, checked."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "vlcl"

LAYERS = [
    {"plugins", "seeds", "config", "metrics", "losses", "fileio", "schema", "errors"},  # pure: the standard library, torch, pydantic
    {"data"},
    {"models"},
    {"settings"},
    {"methods"},
    {"engine"},
    {"report"},
    {"api", "export", "__init__"},  # the library's public face
    {"app", "__main__"},  # the application (the command line, vlcl pretrain, vlcl compare): no library module imports it
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
LAZY_UPWARD = {("config", "methods")}
"""The only imports of a layer above, each inside a function (run when called, never when the module is
imported): vlcl.config looks the method registry up when a config is built, to validate the method's options."""


def runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """Import statements outside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped |= {id(child) for child in ast.walk(node)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def lazy_imports(tree: ast.AST) -> set[int]:
    """The import statements inside a function body."""
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(c) for f in functions for c in ast.walk(f) if isinstance(c, (ast.Import, ast.ImportFrom))}


def imported(node: ast.AST) -> list[str]:
    names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [a.name for a in getattr(node, "names", [])]
    return [name.split(".")[1] for name in names if name.startswith("vlcl.")]


def test_every_module_imports_only_its_own_layer_or_below():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert owner in RANK, f"{path}: not placed in a layer of this test"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy = lazy_imports(tree)
        for node in runtime_imports(tree):
            for target in imported(node):
                if RANK.get(target, 0) > RANK[owner] and not (id(node) in lazy and (owner, target) in LAZY_UPWARD):
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} ({owner}) imports vlcl.{target}")
    assert not wrong, "\n".join(wrong)
