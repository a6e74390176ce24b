"""The LDAP codec layers stay pure: no asyncio, socket or ssl (DESIGN.md, rules of the house)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PURE = ["ber", "messages", "dn", "filters", "directory", "answers", "settings"]
IO = {"asyncio", "socket", "ssl", "selectors", "uvloop"}
ROOT = Path(__file__).resolve().parents[2] / "bridge" / "ldap"


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & IO, f"bridge/ldap/{name}.py imports {imported & IO}"


def test_session_touches_no_socket_or_store() -> None:
    text = (ROOT / "session.py").read_text()
    assert "import socket" not in text and "import ssl" not in text
    assert "import Store\n" not in text and "import Store," not in text
    assert "auth.store" not in text  # the authenticator is the only way to patrons
