"""The layout is mechanical, not a matter of memory (trio's ``test_exports`` habit):

- imports point one way: ``trust`` imports nothing of ours; ``connectors`` only ``trust``;
  ``members`` only ``trust`` and ``connectors``; ``broker`` only ``trust`` and ``connectors``,
  except its command line, which also drives ``members``; nothing imports ``broker``;
- ``trust`` stays pure: no network client or server library;
- only the conformance checker forges tokens (``trust.testing``);
- no import circle between modules;
- every module and subpackage is named in its package's "General layout" docstring, and the
  docstring names nothing that does not exist.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("trust", "connectors", "members", "broker")
ALLOWED: dict[str, set[str]] = {
    "trust": {"trust"},
    "connectors": {"trust", "connectors"},
    "members": {"trust", "connectors", "members"},
    "broker": {"trust", "connectors", "broker"},
}
CLI_ALSO = {"members"}  # broker.cli is the one place that drives the members' code
IMPURE_FOR_TRUST = {"aiohttp", "redis", "asyncpg", "asyncio", "socket", "requests", "httpx"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def modules() -> Iterator[Module]:
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield Module(".".join(parts), path)


MODULES = {m.name: m for m in modules()}


def imports_of(module: Module, *, top_level_only: bool = False) -> set[str]:
    """The modules of ours (and top-level names of others) that ``module`` imports, anywhere
    in the file (lazy imports inside functions count), or only at module level."""
    tree = ast.parse(module.path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{module.name}: use absolute imports")
            base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found


def owner(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("module", list(MODULES.values()), ids=lambda m: m.name)
def test_imports_point_one_way(module: Module) -> None:
    top = owner(module.name)
    allowed = set(ALLOWED[top])
    if module.name == "broker.cli" or module.name.startswith("broker.cli."):
        allowed |= CLI_ALSO
    ours = {owner(name) for name in imports_of(module) if owner(name) in PACKAGES}
    assert ours <= allowed, f"{module.name} imports {sorted(ours - allowed)}"


@pytest.mark.parametrize(
    "module", [m for m in MODULES.values() if owner(m.name) == "trust"], ids=lambda m: m.name
)
def test_trust_stays_pure(module: Module) -> None:
    impure = {owner(name) for name in imports_of(module)} & IMPURE_FOR_TRUST
    assert not impure, f"{module.name} imports {sorted(impure)}"


def test_only_the_conformance_checker_forges_tokens() -> None:
    """``trust.testing`` makes tokens a verifier must refuse: tests and the conformance
    checker (which plays a hostile broker) use it, nothing else in the product."""
    users = {
        name
        for name, module in MODULES.items()
        if "trust.testing" in imports_of(module) and name != "trust.testing"
    }
    assert {u for u in users if not u.startswith("connectors.conformance")} == set()


def test_no_import_circle() -> None:
    graph = {
        name: {i for i in imports_of(m, top_level_only=True) if i in MODULES and i != name}
        for name, m in MODULES.items()
    }
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circle = [*path[path.index(target) :], target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


_BULLET = re.compile(r"^- ((?:``[A-Za-z_][A-Za-z0-9_]*``(?:, )?)+)", re.M)


def named_in_layout(package: Module) -> set[str]:
    doc = ast.get_docstring(ast.parse(package.path.read_text())) or ""
    return {
        name
        for match in _BULLET.finditer(doc)
        for name in re.findall(r"``([A-Za-z_][A-Za-z0-9_]*)``", match.group(1))
    }


def children(package: Module) -> set[str]:
    prefix = package.name + "."
    return {
        name.removeprefix(prefix)
        for name in MODULES
        if name.startswith(prefix) and "." not in name.removeprefix(prefix)
    } - {"__main__"}


PACKAGES_WITH_CHILDREN = [m for m in MODULES.values() if m.is_package and children(m)]


@pytest.mark.parametrize("package", PACKAGES_WITH_CHILDREN, ids=lambda m: m.name)
def test_every_module_is_named_in_its_package_layout(package: Module) -> None:
    named = named_in_layout(package)
    assert children(package) - named == set(), f"{package.name}: not in the layout docstring"
    assert named - children(package) == set(), f"{package.name}: the docstring names ghosts"


def test_the_layout_test_sees_every_package() -> None:
    assert {"trust", "connectors", "members", "broker", "broker.cli"} <= set(MODULES)
    assert all(m.is_package for m in PACKAGES_WITH_CHILDREN)
