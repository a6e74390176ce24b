"""The SIP2 package keeps its layers: the pure modules import no I/O and nothing from a store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bridge" / "sip2"
PURE = ["codec", "messages", "session", "answers", "circulation", "settings", "client"]
FORBIDDEN = {"asyncio", "socket", "ssl", "selectors", "uvloop", "plugins", "bridge.core.store"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    for name in imports(PACKAGE / f"{module}.py"):
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (module, name)


def test_no_module_imports_a_store_plugin() -> None:
    for path in PACKAGE.glob("*.py"):
        assert not any(n.startswith("plugins") for n in imports(path)), path.name
