"""Apache httpd with mod_authnz_ldap against the real daemon (Debian apache2).

Apache runs in the foreground as a non-root process (as `nobody` when the tests run as root),
on a loopback port, with its own minimal config in a temporary directory. It searches as a
restricted service account (an attribute allow-list), binds as the patron, and for
`Require ldap-group` compares `member`/`uniqueMember` on the group entry, then searches the
group for sub-groups. `LDAPCacheEntries 0` / `LDAPOpCacheEntries 0`, as docs/ldap.md advises,
so each request reaches the bridge.

Debian 12's Apache (2.4) compares `objectClass` only on member values that might be sub-groups;
the bridge's groups list no members, so this run never sends that compare. The compare itself
(`C(group, objectClass, groupOfNames)` as a restricted account, once answered 50) is replayed in
test_server.py's `test_group_entries_are_comparable_and_readable_by_every_service_account`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.apache import httpd_head, running_apache
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN

BASE_DN = "dc=library,dc=example"
EZPROXY = f"cn=apache,ou=services,{BASE_DN}"
SECRET = "apache-token-5d0c7e"
SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
groups = ["ADULT", "JUVENILE"]

[[ldap.service_accounts]]
dn = "{EZPROXY}"
password = "{SECRET}"
attributes = ["uid", "cn", "memberOf"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def apache_config(root: Path, port: int, ldap: tuple[str, int]) -> str:
    host, ldap_port = ldap
    url = f"ldap://{host}:{ldap_port}/ou=patrons,{BASE_DN}?uid?sub?(objectClass=inetOrgPerson)"
    modules = [
        ("auth_basic_module", "mod_auth_basic.so"),
        ("ldap_module", "mod_ldap.so"),
        ("authnz_ldap_module", "mod_authnz_ldap.so"),
    ]
    auth = f"""
    AuthType Basic
    AuthName "Library"
    AuthBasicProvider ldap
    AuthLDAPURL "{url}"
    AuthLDAPBindDN "{EZPROXY}"
    AuthLDAPBindPassword "{SECRET}"
"""
    return f"""{httpd_head(root, port, modules, "warn authnz_ldap:debug ldap:debug")}
LDAPCacheEntries 0
LDAPOpCacheEntries 0
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    Require all granted
</Directory>
<Location "/patrons">
{auth}
    Require valid-user
</Location>
<Location "/adults">
{auth}
    Require ldap-group cn=ADULT,ou=groups,{BASE_DN}
</Location>
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SECTIONS).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def apache(daemon: Daemon) -> Iterator[str]:
    port = free_port()

    def write(root: Path) -> None:
        for sub in ("htdocs/patrons", "htdocs/adults"):
            (root / sub).mkdir(parents=True)
            (root / sub / "index.html").write_text("inside\n")
        (root / "httpd.conf").write_text(apache_config(root, port, daemon.address("ldap")))

    with running_apache(daemon, port, write, prefix="bridge-apache-") as url:
        yield url


def get(base: str, path: str, barcode: str, pin: str) -> int:
    return httpx.get(base + path, auth=(barcode, pin), timeout=30).status_code


def test_apache_search_bind_and_ldap_group(daemon: Daemon, apache: str) -> None:
    adult, juvenile = DEMO["active"], DEMO["minor"]
    assert get(apache, "/patrons/index.html", adult, DEMO_PIN) == 200
    assert get(apache, "/patrons/index.html", adult, WRONG_PIN) == 401
    assert get(apache, "/patrons/index.html", "21234999999999", DEMO_PIN) == 401
    # Require ldap-group: Apache compares on the group entry as the service account
    assert get(apache, "/adults/index.html", adult, DEMO_PIN) == 200
    assert get(apache, "/adults/index.html", juvenile, DEMO_PIN) == 401
    daemon.stop()
    audited = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    outcomes = [(e["client"], e["outcome"]) for e in audited]
    assert ("apache", "accepted") in outcomes and ("apache", "bad_pin") in outcomes
