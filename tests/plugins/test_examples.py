"""The example store configs in conf/examples/ parse with their plugin's own keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.app import store_settings
from bridge.config import loads

EXAMPLES = Path(__file__).resolve().parents[2] / "conf" / "examples"
PLUGINS = {
    "postgres.toml": "postgres",
    "koha-sql.toml": "koha-sql",
    "evergreen-sql.toml": "evergreen-sql",
}


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_example_parses(name: str, tmp_path: Path) -> None:
    text = (EXAMPLES / name).read_text()
    # The secrets point at files and variables of a real install; stand in a literal.
    text = re.sub(r"^password_(file|env) = .*$", 'password = "example"', text, flags=re.M)
    config = loads(text, source=name, base_dir=tmp_path)
    plugin, settings = store_settings(config)
    assert plugin.name == PLUGINS[name]
    assert settings.password == "example"
