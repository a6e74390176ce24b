"""`[radius]` config: strict keys, networks, secrets and reply attributes checked at load."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, loads
from bridge.radius.attributes import encode_one

BASE = '[store]\nplugin = "sqlite"\n'


def radius(client: str, extra: str = "") -> str:
    return BASE + f"[radius]\n{extra}\n[[radius.clients]]\n{client}\n"


GOOD = 'name = "wifi"\nnetwork = "10.0.0.0/8"\nsecret = "s3cret-s3cret-s3cret"'


def test_good_config_with_reply_attributes() -> None:
    text = radius(
        GOOD
        + '\nreply = { Session-Timeout = 3600, Class = ["a", "b"], Tunnel-Type = "VLAN" }'
        + '\n[radius.clients.categories.JUVENILE]\nSession-Timeout = 600\nFilter-Id = "kids"',
        "reject_delay = 0.5",
    )
    config = loads(text)
    assert config.radius is not None
    assert config.radius.reject_delay == 0.5
    assert config.radius.clients[0].categories["JUVENILE"]["Session-Timeout"] == 600


@pytest.mark.parametrize(
    ("client", "extra", "where"),
    [
        (GOOD + "\nbogus = 1", "", "radius.clients[0].bogus: unknown key"),
        (GOOD, "bogus = 1", "radius.bogus: unknown key"),
        (GOOD.replace("10.0.0.0/8", "10.0.0.0/33"), "", "radius.clients[0]"),
        (GOOD.replace('"s3cret-s3cret-s3cret"', '""'), "", "secret: must not be empty"),
        (GOOD + "\nreply = { Sesion-Timeout = 1 }", "", "unknown RADIUS attribute"),
        (GOOD + '\nreply = { Session-Timeout = "long" }', "", "cannot encode"),
        (GOOD + '\nreply = { Proxy-State = "x" }', "", "set by the server"),
        (GOOD + "\ncategories = { ADULT = { Nope = 1 } }", "", "categories.ADULT"),
        (GOOD, "reject_delay = 30", "radius.reject_delay"),
        (GOOD, 'store_unavailable = "accept"', "radius.store_unavailable"),
    ],
)
def test_bad_config_names_the_key(client: str, extra: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(radius(client, extra), source="bridge.toml")
    assert where in str(err.value)
    assert "s3cret" not in str(err.value)


def test_secret_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIFI_SECRET", "from-the-environment")
    text = radius(GOOD.replace('secret = "s3cret-s3cret-s3cret"', 'secret_env = "WIFI_SECRET"'))
    config = loads(text)
    assert config.radius is not None
    assert config.radius.clients[0].secret == "from-the-environment"


def test_vendor_attribute_encodes_as_vendor_specific() -> None:
    kind, value = encode_one("MS-CHAP-Error", "E=691")
    assert kind == 26 and value[:4] == (311).to_bytes(4, "big") and value[4] == 2


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("false", False), ('"auto"', "auto")]
)
def test_require_message_authenticator_modes(value: str, expected: object) -> None:
    config = loads(radius(GOOD + f"\nrequire_message_authenticator = {value}"))
    assert config.radius is not None
    assert config.radius.clients[0].require_message_authenticator == expected


def test_require_message_authenticator_defaults_to_required() -> None:
    config = loads(radius(GOOD))
    assert config.radius is not None
    assert config.radius.clients[0].require_message_authenticator is True


@pytest.mark.parametrize("value", ['"yes"', '"AUTO"', "1", '"no"'])
def test_require_message_authenticator_rejects_other_values(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(radius(GOOD + f"\nrequire_message_authenticator = {value}"), source="bridge.toml")
    assert "require_message_authenticator" in str(err.value)
