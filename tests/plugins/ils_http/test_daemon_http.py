"""Each HTTP connector end to end: the real daemon (tests/harness.py) with its `[store]`
pointing at the vendor double, asked by real clients over RADIUS (pyrad) and LDAP (ldap3)."""

from __future__ import annotations

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
from tests.plugins.ils_http.conftest import schema_problems
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


def store_toml(url: str, client_id: str, **more: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in more.items())
    return f"""
[store]
plugin = "koha-rest"
base_url = "{url}"
client_id = "{client_id}"
secret_file = "ils.secret"
request_timeout = 5.0
{extra}"""


def folio_toml(url: str, username: str) -> str:
    return f"""
[store]
plugin = "folio"
base_url = "{url}"
tenant = "{folio_double.TENANT}"
username = "{username}"
password_file = "ils.secret"
request_timeout = 5.0
"""


def sierra_toml(url: str, key: str) -> str:
    return f"""
[store]
plugin = "sierra"
base_url = "{url}{sierra_double.PREFIX}"
key = "{key}"
secret_file = "ils.secret"
request_timeout = 5.0
patron_types = {{ "1" = "ADULT" }}
"""


def polaris_toml(double: polaris_double.PolarisDouble, url: str) -> str:
    return f"""
[store]
plugin = "polaris"
base_url = "{url}{polaris_double.PREFIX}"
access_id = "{double.access_id}"
api_key_file = "ils.secret"
staff_domain = "{double.staff_domain}"
staff_user = "{double.staff_user}"
password_env = "POLARIS_STAFF_PASSWORD"
request_timeout = 5.0
patron_codes = {{ "1" = "ADULT" }}
"""


def alma_toml(url: str) -> str:
    return f"""
[store]
plugin = "alma"
base_url = "{url}"
api_key_file = "ils.secret"
request_timeout = 5.0
"""


def symphony_toml(double: symphony_double.SymphonyDouble, url: str) -> str:
    return f"""
[store]
plugin = "symphony"
base_url = "{url}"
client_id = "{double.client_id}"
user = "{double.staff_user}"
password_file = "ils.secret"
request_timeout = 5.0
"""


def evergreen_toml(double: evergreen_double.EvergreenDouble, url: str) -> str:
    return f"""
[store]
plugin = "evergreen-http"
base_url = "{url}"
staff_user = "{double.staff_user}"
password_file = "ils.secret"
request_timeout = 5.0
"""


@pytest.fixture(
    scope="module",
    params=["koha-rest", "folio", "sierra", "polaris", "alma", "symphony", "evergreen-http"],
)
def ils_daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Daemon]]:
    double: Any
    if request.param == "koha-rest":
        double, schemas = koha_double.KohaDouble(), koha_double.SCHEMAS
    elif request.param == "folio":
        double, schemas = folio_double.FolioDouble(), folio_double.SCHEMAS
    elif request.param == "sierra":
        double, schemas = sierra_double.SierraDouble(), sierra_double.SCHEMAS
    elif request.param == "polaris":
        double, schemas = polaris_double.PolarisDouble(), polaris_double.SCHEMAS
    elif request.param == "alma":
        double, schemas = alma_double.AlmaDouble(), alma_double.SCHEMAS
    elif request.param == "evergreen-http":
        double, schemas = evergreen_double.EvergreenDouble(), evergreen_double.SCHEMAS
    else:
        double, schemas = symphony_double.SymphonyDouble(), symphony_double.SCHEMAS
    env: dict[str, str] = {}
    with Served(double.app()) as served:
        directory = tmp_path_factory.mktemp(request.param)
        if request.param == "koha-rest":
            (directory / "ils.secret").write_text(double.client_secret + "\n")
            store = store_toml(served.url, double.client_id)
        elif request.param == "folio":
            (directory / "ils.secret").write_text(double.password + "\n")
            store = folio_toml(served.url, double.username)
        elif request.param == "sierra":
            (directory / "ils.secret").write_text(double.secret + "\n")
            store = sierra_toml(served.url, double.key)
        elif request.param == "polaris":
            (directory / "ils.secret").write_text(double.key + "\n")
            store = polaris_toml(double, served.url)
            env = {"POLARIS_STAFF_PASSWORD": double.staff_password}
        elif request.param == "alma":
            (directory / "ils.secret").write_text(double.key + "\n")
            store = alma_toml(served.url)
        elif request.param == "evergreen-http":
            (directory / "ils.secret").write_text(double.staff_password + "\n")
            store = evergreen_toml(double, served.url)
        else:
            (directory / "ils.secret").write_text(double.staff_password + "\n")
            store = symphony_toml(double, served.url)
        daemon = Daemon(directory, SECTIONS, store=store, env=env).start()
        try:
            yield double, daemon
        finally:
            assert daemon.stop() == 0
            double.release.set()
    assert not schema_problems(double.responses, schemas)


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
    daemon = Daemon(
        tmp_path, store=store_toml("http://ils.example.org", "c", identifer='"cardnumber"')
    )
    result = run_cli(daemon.config, "check-config")
    assert result.returncode != 0
    assert "store" in result.stderr + result.stdout
