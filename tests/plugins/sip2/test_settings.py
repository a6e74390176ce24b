"""`[store] plugin = "sip2"` keys: the example parses, bad values are one-line config errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.app import store_settings
from bridge.config import ConfigError, loads
from plugins.sip2.settings import Sip2StoreSettings

EXAMPLE = Path(__file__).resolve().parents[3] / "conf" / "examples" / "sip2-upstream.toml"


def test_example_parses(tmp_path: Path) -> None:
    text = re.sub(
        r"^password_(file|env) = .*$", 'password = "example"', EXAMPLE.read_text(), flags=re.M
    )
    config = loads(text, source="sip2-upstream.toml", base_dir=tmp_path)
    plugin, settings = store_settings(config)
    assert plugin.name == "sip2"
    assert isinstance(settings, Sip2StoreSettings)
    assert settings.password == "example" and settings.tls and settings.pool_size == 4
    assert config.sip2 is not None and config.sip2.upstream == "sip2"


@pytest.mark.parametrize(
    ("keys", "where"),
    [
        ('host = ""', "host must not be empty"),
        ('host = "ils"\nlogin = "x"', "needs a password"),
        ('host = "ils"\ninstitution = "A|B"', "institution"),
        ('host = "ils"\npool_size = 0', "store.pool_size"),
        ('host = "ils"\nterminator = "LF"', "store.terminator"),
        ('host = "ils"\nbreaker_reset = 10.0\nbreaker_reset_max = 1.0', "breaker_reset_max"),
        ('host = "ils"\nfoo = 1', "store.foo: unknown key"),
    ],
)
def test_bad_settings_are_config_errors(keys: str, where: str, tmp_path: Path) -> None:
    config = loads(f'[store]\nplugin = "sip2"\n{keys}\n', source="t.toml", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=re.escape(where)) as err:
        store_settings(config)
    assert "\n" not in str(err.value)


def test_password_is_never_in_the_error(tmp_path: Path) -> None:
    text = '[store]\nplugin = "sip2"\nhost = ""\nlogin = "x"\npassword = "hunter2-ils"\n'
    with pytest.raises(ConfigError) as err:
        store_settings(loads(text, source="t.toml", base_dir=tmp_path))
    assert "hunter2" not in str(err.value)
