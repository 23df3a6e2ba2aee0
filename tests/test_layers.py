"""The house rules, read off the source: imports run one way, third-party code is used through its
public API only and never patched, and every library the service imports is pinned."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# main → initialize → routers → (api/v1, middleware) → utils → global_state (SPEC/STYLE).
LAYERS = {
    "main": 0,
    "initialize": 1,
    "routers": 2,
    "api": 3,
    "middleware": 3,
    "utils": 4,
    "global_state": 5,
}
SERVICE_FILES = sorted(
    [ROOT / "main.py", ROOT / "gunicorn.conf.py"]
    + [path for package in LAYERS if package != "main" for path in (ROOT / package).rglob("*.py")]
)


def layer_of(module: str) -> int | None:
    return LAYERS.get(module.split(".")[0])


def imported_modules(tree: ast.AST) -> list[str]:
    """Every module an import statement names, TYPE_CHECKING blocks and function bodies too."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=lambda path: module_name(path))
def test_imports_only_reach_down(path):
    own = layer_of(module_name(path))
    if own is None:  # gunicorn.conf.py sits beside main.py, above every package
        own = 0
    upward = [
        module
        for module in imported_modules(parse(path))
        if (layer := layer_of(module)) is not None and layer < own
    ]
    assert upward == [], f"{module_name(path)} imports from a layer above it: {upward}"


def third_party_roots() -> set[str]:
    """Top-level import names of installed distributions that are not this project's."""
    return set(packages_distributions()) - set(LAYERS) - set(sys.stdlib_module_names)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=lambda path: module_name(path))
def test_no_private_name_of_a_library_is_used_or_replaced(path):
    """No ``lib._private``, no ``from lib import _private``, no assignment to a library's
    attribute (a monkeypatch); ``self._x`` is the object's own business."""
    tree = parse(path)
    libraries = third_party_roots()
    aliases = library_names(tree, libraries) - {"g"}  # flask.g is made for request data
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module.split(".")[0] in libraries:
                private = [a.name for a in node.names if _is_private(a.name)]
                private += [part for part in node.module.split(".") if _is_private(part)]
                found += [f"from {node.module} import {name}" for name in private]
        elif isinstance(node, ast.Attribute) and _is_private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                root = target
                while isinstance(root, ast.Attribute):
                    root = root.value
                if target is not root and isinstance(root, ast.Name) and root.id in aliases:
                    found.append(f"line {node.lineno}: assigns to {ast.unparse(target)}")
    assert found == []


def library_names(tree: ast.AST, libraries: set[str]) -> set[str]:
    """The names a module binds to a library's modules, classes or functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {
                alias.asname or alias.name.split(".")[0]
                for alias in node.names
                if alias.name.split(".")[0] in libraries
            }
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names |= {
                alias.asname or alias.name
                for alias in node.names
                if node.module.split(".")[0] in libraries
            }
    return names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_library_the_service_imports_is_pinned():
    pinned = {
        re.split(r"[=\[<>~ ]", line)[0].strip().lower().replace("_", "-")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    distributions = packages_distributions()
    libraries = third_party_roots()
    imported = {
        module.split(".")[0]
        for path in SERVICE_FILES
        for module in imported_modules(parse(path))
        if module.split(".")[0] in libraries
    }
    unpinned = {
        root: distributions[root]
        for root in imported
        if not pinned & {name.lower().replace("_", "-") for name in distributions[root]}
    }
    assert unpinned == {}
