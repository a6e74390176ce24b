"""koha-rest end to end: the real daemon (tests/harness.py) with `[store] plugin = "koha-rest"`
pointing at the Koha double, asked by real clients over RADIUS (pyrad) and LDAP (ldap3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import SUBTREE, Connection, Server
from pyrad import packet as pp
from pyrad.client import Client as PyradClient
from pyrad.dictionary import Dictionary

from bridge.radius.attributes import DICTIONARY
from tests.harness import Daemon, run_cli
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins.ils_http.conftest import schema_problems
from tests.plugins.ils_http.koha_double import SCHEMAS, KohaDouble
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
secret_file = "koha.secret"
request_timeout = 5.0
{extra}"""


@pytest.fixture(scope="module")
def koha_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KohaDouble, Daemon]]:
    double = KohaDouble()
    with Served(double.app()) as served:
        directory = tmp_path_factory.mktemp("koha-rest")
        (directory / "koha.secret").write_text(double.client_secret + "\n")
        store = store_toml(served.url, double.client_id)
        daemon = Daemon(directory, SECTIONS, store=store).start()
        try:
            yield double, daemon
        finally:
            assert daemon.stop() == 0
            double.release.set()
    assert not schema_problems(double.responses, SCHEMAS)


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
def test_radius_through_koha(
    koha_daemon: tuple[KohaDouble, Daemon], barcode: str, pin: str, code: int
) -> None:
    double, daemon = koha_daemon
    before = double.count("/auth/password/validation")
    assert radius(daemon, barcode, pin).code == code
    assert double.count("/auth/password/validation") == before + 1  # Koha checked it


def test_ldap_search_then_bind_through_koha(koha_daemon: tuple[KohaDouble, Daemon]) -> None:
    double, daemon = koha_daemon
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
    assert double.tokens_issued == 1  # one token for the daemon's whole life so far


def test_bad_store_settings_stop_the_daemon_at_start(tmp_path: Path) -> None:
    (tmp_path / "koha.secret").write_text("s\n")
    daemon = Daemon(
        tmp_path, store=store_toml("http://ils.example.org", "c", identifer='"cardnumber"')
    )
    result = run_cli(daemon.config, "check-config")
    assert result.returncode != 0
    assert "store" in result.stderr + result.stdout
