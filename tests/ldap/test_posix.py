"""The optional posix view (`[ldap] posix = true`) and SSSD's searches, replayed with ldap3.

SSSD itself runs in tests/ldap/test_sssd.py (root only); here, with no root and no SSSD
needed, the searches an `id_provider = ldap` domain (rfc2307 schema, the default) sends at
start and on `id`/`getent`/`sudo` are replayed as SSSD's source builds them, in order:

- RootDSE, anonymously, with SSSD's attribute list (`sdap_get_rootdse_send`);
- user by name: `(&(uid=NAME)(objectclass=posixAccount)(&(uidNumber=*)(!(uidNumber=0))))`
  (`users_get_send` / `sdap_get_initgr_send`, not ID-mapping: "make sure there is a non-NULL
  UID"), with the paged-results control it adds when the server advertises it;
- user by uid number: the same with `(uidNumber=N)`;
- initgroups (rfc2307): `(&(memberuid=NAME)(objectclass=posixGroup)(cn=*)NONZERO_GID)`;
- group by gid and by name: `(&(gidNumber=G)(objectclass=posixGroup)(cn=*)NONZERO_GID)`,
  NONZERO_GID being `(&(gidNumber=*)(!(gidNumber=0)))`;
- sudo full refresh: `(&(objectClass=sudoRole)(|(!(sudoHost=*))(sudoHost=ALL)(sudoHost=HOST)...))`
  (`sdap_sudo_build_host_filter`).

Each must answer cleanly: success (0), the entries it names, never sizeLimitExceeded or an
error that makes SSSD mark the server offline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import BASE, SUBTREE, Connection, Server

from bridge.config import ConfigError, loads
from tests.harness import DEMO_CSV, Daemon
from tests.pins import DEMO_PIN

BASE_DN = "dc=library,dc=example"
SSSD = f"cn=sssd,ou=services,{BASE_DN}"
SSSD_SECRET = "sssd-token-3f9a1c"
PAGED = "1.2.840.113556.1.4.319"
ROOTDSE_ATTRS = [
    "*",
    "altServer",
    "namingContexts",
    "supportedControl",
    "supportedExtension",
    "supportedFeatures",
    "supportedLDAPVersion",
    "supportedSASLMechanisms",
    "domainControllerFunctionality",
    "defaultNamingContext",
    "lastUSN",
    "highestCommittedUSN",
]
USER_ATTRS = [
    "objectClass",
    "uid",
    "userPassword",
    "uidNumber",
    "gidNumber",
    "gecos",
    "homeDirectory",
    "loginShell",
    "krbPrincipalName",
    "cn",
    "modifyTimestamp",
    "entryUSN",
    "shadowLastChange",
    "shadowMin",
    "shadowMax",
    "shadowWarning",
    "shadowInactive",
    "shadowExpire",
    "shadowFlag",
    "krbLastPwdChange",
    "krbPasswordExpiration",
    "pwdAttribute",
    "authorizedService",
    "accountExpires",
    "userAccountControl",
    "nsAccountLock",
    "host",
    "loginDisabled",
    "loginExpirationTime",
    "loginAllowedTimeMap",
    "sshPublicKey",
    "userCertificate;binary",
    "mail",
]
GROUP_ATTRS = ["objectClass", "cn", "userPassword", "gidNumber", "memberuid", "modifyTimestamp"]
SUDO_ATTRS = [
    "objectClass",
    "cn",
    "sudoCommand",
    "sudoHost",
    "sudoUser",
    "sudoOption",
    "sudoRunAs",
    "sudoRunAsUser",
    "sudoRunAsGroup",
    "sudoNotBefore",
    "sudoNotAfter",
    "sudoOrder",
    "entryUSN",
]
NON_ZERO_UID = "(&(uidNumber=*)(!(uidNumber=0)))"
NON_ZERO_GID = "(&(gidNumber=*)(!(gidNumber=0)))"

ADULT_CARD, CHILD_CARD, NO_NUMBER_CARD = "21234000000001", "21234000000004", "21234000000005"


def sections(posix: bool) -> str:
    return f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
groups = ["ADULT", "JUVENILE"]
posix = {"true" if posix else "false"}
posix_uid_base = 200000
posix_gids = {{ ADULT = 5001, JUVENILE = 5002 }}
posix_home = "/home/patrons/{{uid}}"
posix_shell = "/usr/bin/{{category}}-kiosk"

[[ldap.service_accounts]]
dn = "{SSSD}"
password = "{SSSD_SECRET}"
"""


def store(tmp: Path) -> str:
    """The demo patrons with ILS-style numeric record ids (Koha's borrowernumber), but one."""
    rows = DEMO_CSV.read_text().splitlines()
    out = [rows[0] + ",record_id"]
    for n, row in enumerate(rows[1:], start=1):
        out.append(row + ("," if row.startswith(NO_NUMBER_CARD) else f",{40 + n}"))
    csv = tmp / "patrons.csv"
    csv.write_text("\n".join(out) + "\n")
    return f"""
[store]
plugin = "sqlite"
path = "patrons.db"
demo = true
demo_file = "{csv}"
"""


@pytest.fixture(scope="module", params=[True], ids=["posix"])
def daemon(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("posix")
    d = Daemon(tmp, sections(request.param), store=store(tmp)).start()
    yield d
    d.stop()


def sssd(d: Daemon) -> Connection:
    host, port = d.address("ldap")
    conn = Connection(Server(host, port, get_info="NO_INFO"), raise_exceptions=False)
    conn.open()
    return conn


def search(conn: Connection, filt: str, attrs: list[str]) -> list[dict[str, object]]:
    ok = conn.search(BASE_DN, filt, SUBTREE, attributes=attrs, paged_size=1000)
    assert conn.result["result"] == 0, (filt, conn.result)
    assert ok or not conn.response
    assert PAGED in conn.result.get("controls", {})
    return [e for e in conn.response if e.get("type") == "searchResEntry"]


def test_sssd_start_and_lookups(daemon: Daemon) -> None:
    conn = sssd(daemon)
    # 1. RootDSE, anonymously
    assert conn.search("", "(objectclass=*)", BASE, attributes=ROOTDSE_ATTRS)
    root = conn.response[0]["attributes"]
    assert root["namingContexts"] == [BASE_DN] and PAGED in root["supportedControl"]
    # 2. the default bind DN
    assert conn.rebind(SSSD, SSSD_SECRET)
    # 3. getpwnam
    users = search(
        conn, f"(&(uid={ADULT_CARD})(objectclass=posixAccount){NON_ZERO_UID})", USER_ATTRS
    )
    assert len(users) == 1
    user = users[0]["attributes"]
    assert user["uidNumber"] == ["200041"] and user["gidNumber"] == ["5001"]
    assert user["homeDirectory"] == [f"/home/patrons/{ADULT_CARD}"]
    assert user["loginShell"] == ["/usr/bin/adult-kiosk"]
    assert "posixAccount" in user["objectClass"] and user["gecos"] == ["Rivera, Ana"]
    # 4. initgroups (rfc2307): no member lists, so no supplementary groups; cleanly none
    member_of = f"(&(memberuid={ADULT_CARD})(objectclass=posixGroup)(cn=*){NON_ZERO_GID})"
    assert search(conn, member_of, GROUP_ATTRS) == []
    # 5. the primary group by gid, and by name
    by_gid = search(
        conn, f"(&(gidNumber=5002)(objectclass=posixGroup)(cn=*){NON_ZERO_GID})", GROUP_ATTRS
    )
    assert [g["attributes"]["cn"] for g in by_gid] == [["JUVENILE"]]
    by_name = search(
        conn, f"(&(cn=ADULT)(objectclass=posixGroup)(cn=*){NON_ZERO_GID})", GROUP_ATTRS
    )
    assert by_name[0]["attributes"]["gidNumber"] == ["5001"]
    assert not by_name[0]["attributes"].get("memberuid")  # no member lists
    # 6. getpwuid
    by_uid = search(
        conn, f"(&(uidNumber=200044)(objectclass=posixAccount){NON_ZERO_UID})", USER_ATTRS
    )
    assert [u["attributes"]["uid"] for u in by_uid] == [[CHILD_CARD]]
    assert by_uid[0]["attributes"]["gidNumber"] == ["5002"]
    assert (
        search(conn, f"(&(uidNumber=999)(objectclass=posixAccount){NON_ZERO_UID})", USER_ATTRS)
        == []
    )
    # 7. a patron whose record id is not a number has no posix view: not a posixAccount
    assert (
        search(
            conn, f"(&(uid={NO_NUMBER_CARD})(objectclass=posixAccount){NON_ZERO_UID})", USER_ATTRS
        )
        == []
    )
    # 8. sudo full refresh: no sudo rules here, answered with none (not sizeLimitExceeded)
    host = "(|(!(sudoHost=*))(sudoHost=ALL)(sudoHost=kiosk-3)(sudoHost=kiosk-3.library.example)"
    host += "(sudoHost=127.0.0.1)(sudoHost=127.0.0.0/8)(sudoHost=+*)"
    host += "(|(sudoHost=*\\5C*)(sudoHost=*?*)(sudoHost=*\\2A*)(sudoHost=*[*]*)))"
    assert search(conn, f"(&(objectClass=sudoRole){host})", SUDO_ATTRS) == []
    assert search(conn, "(&(objectClass=sudoRole)(entryUSN>=1))", SUDO_ATTRS) == []
    # 9. the PAM side: bind as the user's DN with the ppolicy control
    ppolicy = [("1.3.6.1.4.1.42.2.27.8.5.1", False, None)]
    assert conn.rebind(users[0]["dn"], DEMO_PIN, controls=ppolicy)
    conn.unbind()


def test_nslcd_default_filters(daemon: Daemon) -> None:
    """nslcd (nss-pam-ldapd) looks users up with `(&(objectClass=posixAccount)(uid=NAME))`
    and `(&(objectClass=posixAccount)(uidNumber=N))`, groups with
    `(&(objectClass=posixGroup)(cn=NAME))`; enumeration (`getent passwd`, filter
    `(objectClass=posixAccount)`) is refused (docs/ldap.md: `nss_disable_enumeration yes`)."""
    conn = sssd(daemon)
    assert conn.rebind(SSSD, SSSD_SECRET)
    found = search(conn, f"(&(objectClass=posixAccount)(uid={CHILD_CARD}))", ["uidNumber"])
    assert found[0]["attributes"]["uidNumber"] == ["200044"]
    found = search(conn, "(&(objectClass=posixAccount)(uidNumber=200041))", ["uid"])
    assert found[0]["attributes"]["uid"] == [ADULT_CARD]
    found = search(conn, "(&(objectClass=posixGroup)(cn=JUVENILE))", ["gidNumber"])
    assert found[0]["attributes"]["gidNumber"] == ["5002"]
    conn.search(BASE_DN, "(objectClass=posixAccount)", SUBTREE, attributes=["uid"])
    assert conn.result["result"] == 4  # sizeLimitExceeded: no enumeration of patrons
    conn.unbind()


def test_without_posix_sssd_group_and_sudo_searches_still_answer_cleanly(
    tmp_path: Path,
) -> None:
    with Daemon(tmp_path, sections(False), store=store(tmp_path)) as d:
        conn = sssd(d)
        assert conn.rebind(SSSD, SSSD_SECRET)
        assert (
            search(conn, f"(&(uid={ADULT_CARD})(objectclass=posixAccount){NON_ZERO_UID})", ["uid"])
            == []
        )
        assert (
            search(conn, f"(&(cn=ADULT)(objectclass=posixGroup)(cn=*){NON_ZERO_GID})", ["cn"]) == []
        )
        assert search(conn, "(&(objectClass=sudoRole)(sudoHost=ALL))", SUDO_ATTRS) == []
        found = search(conn, f"(&(uid={ADULT_CARD})(objectClass=inetOrgPerson))", ["uidNumber"])
        assert len(found) == 1 and not found[0]["attributes"].get("uidNumber")
        conn.unbind()


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ('posix_home = "/home/{username}"', "posix_home"),
        ('posix_shell = "/bin/{0}"', "posix_shell"),
        ("posix_uid_base = 0", "posix_uid_base"),
        ('posix_gids = { ADULT = "x" }', "posix_gids"),
    ],
)
def test_posix_config_errors_name_the_key(extra: str, where: str) -> None:
    text = f'[store]\nplugin = "sqlite"\n[ldap]\nposix = true\n{extra}\n'
    with pytest.raises(ConfigError) as err:
        loads(text, source="bridge.toml")
    assert where in str(err.value)
