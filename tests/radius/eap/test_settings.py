"""`[radius.eap]`: keys checked at load, certificates checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, loads
from tests.harness import Daemon

BASE = '[store]\nplugin = "sqlite"\n[radius]\n'
CLIENT = (
    '[[radius.clients]]\nname = "wifi"\nnetwork = "127.0.0.1"\nsecret = "s3cret-s3cret-s3cret"\n'
)


def test_defaults_and_keys() -> None:
    config = loads(BASE + '[radius.eap]\ncertificate = "c.pem"\nkey = "k.pem"\n' + CLIENT)
    assert config.radius is not None and config.radius.eap is not None
    eap = config.radius.eap
    assert (eap.fragment_size, eap.max_rounds, eap.timeout) == (1024, 50, 30.0)
    assert eap.ca is None and eap.accept_user_name is False
    assert loads(BASE + CLIENT).radius.eap is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('key = "k.pem"', "certificate"),
        ('certificate = "c"\nkey = "k"\nbogus = 1', "radius.eap.bogus"),
        ('certificate = "c"\nkey = "k"\nfragment_size = 10', "fragment_size"),
        ('certificate = "c"\nkey = "k"\nmax_rounds = 1', "max_rounds"),
        ('certificate = "c"\nkey = "k"\ntimeout = 0', "timeout"),
    ],
)
def test_bad_keys_are_config_errors(body: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        loads(BASE + "[radius.eap]\n" + body + "\n" + CLIENT)


def test_missing_certificate_stops_the_daemon_with_the_key_named(tmp_path: Path) -> None:
    sections = (
        '[radius]\nlisten = ["127.0.0.1:0"]\n[radius.eap]\ncertificate = "none.pem"\n'
        'key = "none-key.pem"\n' + CLIENT
    )
    with pytest.raises(RuntimeError, match=r"radius\.eap\.certificate: cannot load"):
        Daemon(tmp_path, sections).start()
