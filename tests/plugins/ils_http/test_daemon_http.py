"""Each HTTP connector end to end: the real daemon (tests/harness.py) with its `[store]`
pointing at the vendor double, asked by real clients over RADIUS (pyrad) and LDAP (ldap3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ldap3 import SUBTREE, Connection, Server
from pyrad import packet as pp
from pyrad.client import Client as PyradClient
from pyrad.dictionary import Dictionary

from bridge.radius.attributes import DICTIONARY
from tests.harness import Daemon, run_cli
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins.ils_http import (
    alma_double,
    evergreen_double,
    folio_double,
    koha_double,
    polaris_double,
    sierra_double,
    symphony_double,
)
from tests.plugins.ils_http.conftest import KINDS, schema_problems
from tests.plugins.ils_http.serve import Served
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, UNKNOWN

RADIUS_SECRET = "testing123"
BASE_DN = "dc=library,dc=example"
PATRONS = f"ou=patrons,{BASE_DN}"
PROXY = f"cn=ezproxy,ou=services,{BASE_DN}"
PROXY_SECRET = "ezproxy-token-5d1c9e"

SECTIONS = f"""
[cache]
ttl = 0

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{RADIUS_SECRET}"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[[ldap.service_accounts]]
dn = "{PROXY}"
password = "{PROXY_SECRET}"
attributes = ["uid", "cn", "mail"]
"""


# Which setting each connector reads from a file (`<key>_file`) and which from the environment
# (`<key>_env`) in these tests, so both ways of keeping secrets out of the config run for real.
FROM_FILE = {
    "koha": "secret",
    "folio": "password",
    "sierra": "secret",
    "polaris": "api_key",
    "alma": "api_key",
    "symphony": "password",
    "evergreen": "password",
}
FROM_ENV = {"polaris": "password"}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def store_toml(kind: str, double: Any, url: str) -> tuple[str, str, dict[str, str]]:
    """The `[store]` table for the daemon, the secret for `ils.secret`, and the environment."""
    settings = {**KINDS[kind].settings(double, url), "request_timeout": 5.0}
    secret = str(settings.pop(FROM_FILE[kind]))
    env = {}
    lines = [
        "[store]",
        f'plugin = "{KINDS[kind].plugin}"',
        f'{FROM_FILE[kind]}_file = "ils.secret"',
    ]
    if kind in FROM_ENV:
        name = f"{kind.upper()}_{FROM_ENV[kind].upper()}"
        env[name] = str(settings.pop(FROM_ENV[kind]))
        lines.append(f'{FROM_ENV[kind]}_env = "{name}"')
    lines += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    return "\n" + "\n".join(lines) + "\n", secret, env


@pytest.fixture(scope="module", params=list(KINDS))
def ils_daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Daemon]]:
    kind = KINDS[request.param]
    double = kind.double()
    with Served(double.app()) as served:
        directory = tmp_path_factory.mktemp(request.param)
        store, secret, env = store_toml(request.param, double, served.url)
        (directory / "ils.secret").write_text(secret + "\n")
        daemon = Daemon(directory, SECTIONS, store=store, env=env).start()
        try:
            yield double, daemon
        finally:
            assert daemon.stop() == 0
            double.release.set()
    assert not schema_problems(double.responses, kind.schemas)


def radius(daemon: Daemon, barcode: str, pin: str) -> pp.Packet:
    host, port = daemon.address("radius")
    client = PyradClient(
        server=host,
        authport=port,
        acctport=port,
        secret=RADIUS_SECRET.encode(),
        dict=Dictionary(str(DICTIONARY)),
        retries=1,
        timeout=10,
    )
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=barcode)
    request["User-Password"] = request.PwCrypt(pin)
    request.add_message_authenticator()
    return client.SendPacket(request)


@pytest.mark.parametrize(
    ("barcode", "pin", "code"),
    [
        (ACTIVE.barcode, DEMO_PIN, pp.AccessAccept),
        (ACTIVE.barcode, WRONG_PIN, pp.AccessReject),
        (UNKNOWN, DEMO_PIN, pp.AccessReject),
        (EXPIRED.barcode, DEMO_PIN, pp.AccessReject),
        (BLOCKED.barcode, DEMO_PIN, pp.AccessReject),
        (FINES.barcode, DEMO_PIN, pp.AccessReject),
    ],
)
def test_radius_through_the_ils(
    ils_daemon: tuple[Any, Daemon], barcode: str, pin: str, code: int
) -> None:
    double, daemon = ils_daemon
    check = {
        koha_double.KohaDouble: "/auth/password/validation",
        folio_double.FolioDouble: "/patron-pin/verify",
        sierra_double.SierraDouble: "/patrons/validate",
        polaris_double.PolarisDouble: "/authenticator/patron",
        symphony_double.SymphonyDouble: "/user/patron/authenticate",
    }.get(type(double), "")
    if isinstance(double, evergreen_double.EvergreenDouble):
        before = double.pin_checks()
        assert radius(daemon, barcode, pin).code == code
        assert double.pin_checks() == before + 1  # Evergreen checked it
        return
    if isinstance(double, alma_double.AlmaDouble):
        before = double.calls("POST")
        assert radius(daemon, barcode, pin).code == code
        assert double.calls("POST") == before + 1  # the ILS checked it
        return
    before = double.count(check)
    assert radius(daemon, barcode, pin).code == code
    if barcode != UNKNOWN or not isinstance(double, folio_double.FolioDouble):
        assert double.count(check) == before + 1  # the ILS checked it


def test_ldap_search_then_bind_through_the_ils(ils_daemon: tuple[Any, Daemon]) -> None:
    double, daemon = ils_daemon
    host, port = daemon.address("ldap")
    conn = Connection(Server(host, port), PROXY, PROXY_SECRET, raise_exceptions=False)
    assert conn.bind()
    assert conn.search(BASE_DN, f"(uid={ACTIVE.barcode})", SUBTREE, attributes=["cn", "mail"])
    assert len(conn.response) == 1
    entry = conn.response[0]
    assert entry["attributes"]["mail"] == [ACTIVE.email]
    assert conn.rebind(entry["dn"], DEMO_PIN)
    assert not conn.rebind(entry["dn"], WRONG_PIN)
    conn.unbind()
    if isinstance(double, folio_double.FolioDouble):
        assert double.logins == 1  # one login for the daemon's whole life so far
    elif isinstance(double, polaris_double.PolarisDouble):
        assert double.staff_logins == 1  # one staff session (for the LDAP search)
    elif isinstance(double, symphony_double.SymphonyDouble):
        assert double.logins == 1  # one staff session
    elif isinstance(double, alma_double.AlmaDouble):
        assert double.calls("POST") >= 1  # API key on every call: no session to count
    elif isinstance(double, evergreen_double.EvergreenDouble):
        assert double.logins["staff"] == 1  # one staff session (for the LDAP search)
    else:
        assert double.tokens_issued == 1  # one token for the daemon's whole life so far


def test_bad_store_settings_stop_the_daemon_at_start(tmp_path: Path) -> None:
    (tmp_path / "ils.secret").write_text("s\n")
    double = KINDS["koha"].double()
    store, _, _ = store_toml("koha", double, "http://ils.example.org")
    daemon = Daemon(tmp_path, store=store + 'identifer = "cardnumber"\n')
    result = run_cli(daemon.config, "check-config")
    assert result.returncode != 0
    assert "store" in result.stderr + result.stdout
