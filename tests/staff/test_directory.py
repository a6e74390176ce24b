"""Staff sign-in against a real directory (Debian's slapd, test-local on a loopback port):
the bind checks the password, the groups map to roles (the highest wins), a user in no mapped
group gets no access, the role holds on the server (403), and a directory that cannot be
reached is said so rather than read as a wrong password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.staff import directory
from bridge.staff.roles import Role
from bridge.staff.settings import StaffDirectory
from bridge.tls import generate_self_signed
from tests.harness import DEMO
from tests.portal.support import free_port
from tests.staff.slapd import GROUPS, PASSWORDS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, Slapd
from tests.staff.support import StaffEnv, open_staff_env


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def section(url: str) -> str:
    return f"""auth = "ldap"

[staff.ldap]
url = "{url}"
user_dn = "uid={{name}},{PEOPLE}"
group_base = "{GROUPS}"
groups = {{ "cn=circulation,{GROUPS}" = "desk", "CN=Circ-Supervisors, {GROUPS}" = "supervisor" }}
"""


@pytest.fixture
def env(tmp_path: Path, slapd: Slapd) -> Iterator[StaffEnv]:
    extra = section(slapd.url)
    yield from open_staff_env(tmp_path, extra)


def settings(url: str) -> StaffDirectory:
    return msgspec.convert(
        {
            "url": url,
            "user_dn": f"uid={{name}},{PEOPLE}",
            "group_base": GROUPS,
            "groups": {
                f"cn=circulation,{GROUPS}": "desk",
                f"cn=circ-supervisors,{GROUPS}": "supervisor",
            },
        },
        StaffDirectory,
    )


def test_directory_roles(slapd: Slapd, tmp_path: Path) -> None:
    s = settings(slapd.url)
    assert directory.sign_in(s, tmp_path, "lee", Secret(PASSWORDS["lee"])) is Role.SUPERVISOR
    assert directory.sign_in(s, tmp_path, "kim", Secret(PASSWORDS["kim"])) is Role.DESK
    assert directory.sign_in(s, tmp_path, "noor", Secret(PASSWORDS["noor"])) is None  # no group
    assert directory.sign_in(s, tmp_path, "kim", Secret(PASSWORDS["lee"])) is None
    assert directory.sign_in(s, tmp_path, "kim", Secret("")) is None  # never an anonymous bind
    assert directory.sign_in(s, tmp_path, "nobody", Secret("whatever pw 12")) is None


def test_directory_down(tmp_path: Path) -> None:
    s = settings(f"ldap://127.0.0.1:{free_port()}")
    with pytest.raises(directory.DirectoryUnavailable):
        directory.sign_in(s, tmp_path, "kim", Secret(PASSWORDS["kim"]))


def test_sign_in_through_the_directory(env: StaffEnv) -> None:
    assert "not correct" in env.login("lee", "wrong directory pw").text
    assert "not correct" in env.login("noor", PASSWORDS["noor"]).text  # in no mapped group
    env.login("kim", PASSWORDS["kim"])
    assert "kim · Desk · Central" in env.client.get("/desk").text
    refused = env.post(f"/card/{DEMO['active']}/block", reason="test")
    assert refused.status_code == 403
    env.client.post("/logout", data={"csrf": env.csrf("/desk")})
    env.login("lee", PASSWORDS["lee"])
    assert "lee · Supervisor · Central" in env.client.get("/desk").text
    page = env.post(f"/card/{DEMO['active']}/block", reason="Card reported stolen")
    assert "The card is blocked." in page.text
    login = [e for e in env.audit.events if e["event"] == "staff_login"]
    assert [(e["staff"], e["role"]) for e in login] == [("kim", "desk"), ("lee", "supervisor")]


def test_local_accounts_do_not_sign_in_when_the_directory_is_used(env: StaffEnv) -> None:
    assert "not correct" in env.login("dana").text  # a local account of the support env


# -- search-then-bind, memberOf, StartTLS and LDAPS -----------------------------------------------


@pytest.fixture
def tls_slapd(tmp_path: Path) -> Iterator[Slapd]:
    server = Slapd(tmp_path, tls=True).start()
    try:
        yield server
    finally:
        server.stop()


def search_settings(url: str, tmp_path: Path, **more: object) -> StaffDirectory:
    """Search-then-bind as the service account, the role from `memberOf` (AD's shape)."""
    (tmp_path / "svc-password").write_text(SERVICE_PASSWORD + "\n")
    return msgspec.convert(
        {
            "url": url,
            "user_base": PEOPLE,
            "user_filter": "(&(objectClass=inetOrgPerson)(uid={user}))",
            "bind_dn": SERVICE_DN,
            "bind_password_file": "svc-password",
            "member_attribute": "memberOf",
            "groups": {
                f"cn=circulation,{GROUPS}": "desk",
                f"cn=circ-supervisors,{GROUPS}": "supervisor",
            },
            **more,
        },
        StaffDirectory,
    )


def roles_of(s: StaffDirectory, tmp_path: Path) -> list[Role | None]:
    return [
        directory.sign_in(s, tmp_path, name, Secret(PASSWORDS[name]))
        for name in ("lee", "kim", "noor")
    ]


def test_search_then_bind_with_member_of(slapd: Slapd, tmp_path: Path) -> None:
    s = search_settings(slapd.url, tmp_path)
    assert s is not None
    assert roles_of(s, tmp_path) == [Role.SUPERVISOR, Role.DESK, None]
    assert directory.sign_in(s, tmp_path, "kim", Secret(PASSWORDS["lee"])) is None
    assert directory.sign_in(s, tmp_path, "nobody", Secret("whatever pw 12")) is None


def test_search_then_bind_with_a_group_search(slapd: Slapd, tmp_path: Path) -> None:
    s = search_settings(slapd.url, tmp_path, member_attribute=None, group_base=GROUPS)
    assert roles_of(s, tmp_path) == [Role.SUPERVISOR, Role.DESK, None]


def test_member_of_with_a_dn_template(slapd: Slapd, tmp_path: Path) -> None:
    s = msgspec.convert(
        {
            "url": slapd.url,
            "user_dn": f"uid={{name}},{PEOPLE}",
            "member_attribute": "memberOf",
            "groups": {f"cn=circ-supervisors,{GROUPS}": "supervisor"},
        },
        StaffDirectory,
    )
    assert roles_of(s, tmp_path) == [Role.SUPERVISOR, None, None]


HOSTILE = ["*", "k*", "lee)(uid=*", "*)(|(uid=*", "lee\\", "lee\x00"]


@pytest.mark.parametrize("name", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_the_name_is_only_data_in_the_filter(slapd: Slapd, tmp_path: Path, name: str) -> None:
    s = search_settings(slapd.url, tmp_path)
    assert directory.sign_in(s, tmp_path, name, Secret(PASSWORDS["lee"])) is None
    built = directory.user_filter(s, name)
    inner = built[len("(&(objectClass=inetOrgPerson)(uid=") : -2]
    assert inner == "".join(f"\\{ord(c):02x}" if c in "*()\\\x00" else c for c in name)


def test_a_wrong_service_password_is_a_directory_problem(slapd: Slapd, tmp_path: Path) -> None:
    s = search_settings(slapd.url, tmp_path)
    (tmp_path / "svc-password").write_text("not the password\n")
    with pytest.raises(directory.DirectoryUnavailable):
        directory.sign_in(s, tmp_path, "kim", Secret(PASSWORDS["kim"]))


@pytest.mark.parametrize("how", ["starttls", "ldaps"])
def test_tls_with_the_ca_file(tls_slapd: Slapd, tmp_path: Path, how: str) -> None:
    url = tls_slapd.ldaps_url if how == "ldaps" else tls_slapd.url
    assert url is not None
    s = search_settings(url, tmp_path, start_tls=how == "starttls", ca_file=str(tls_slapd.ca_file))
    assert roles_of(s, tmp_path) == [Role.SUPERVISOR, Role.DESK, None]
    # Another CA: the server's certificate is refused, the sign-in never sent.
    generate_self_signed(tmp_path / "other.pem", tmp_path / "other-key.pem", ["127.0.0.1"])
    wrong = search_settings(url, tmp_path, start_tls=how == "starttls", ca_file="other.pem")
    with pytest.raises(directory.DirectoryUnavailable):
        directory.sign_in(wrong, tmp_path, "kim", Secret(PASSWORDS["kim"]))


def test_tls_desk_sign_in_end_to_end(tls_slapd: Slapd, tmp_path: Path) -> None:
    """The desk signs in over LDAPS with search-then-bind and memberOf, from the config."""
    (tmp_path / "svc-password").write_text(SERVICE_PASSWORD + "\n")
    extra = f"""auth = "ldap"

[staff.ldap]
url = "{tls_slapd.ldaps_url}"
ca_file = "{tls_slapd.ca_file}"
user_base = "{PEOPLE}"
user_filter = "(uid={{user}})"
bind_dn = "{SERVICE_DN}"
bind_password_file = "svc-password"
member_attribute = "memberOf"
groups = {{ "cn=circulation,{GROUPS}" = "desk", "cn=circ-supervisors,{GROUPS}" = "supervisor" }}
"""
    for env in open_staff_env(tmp_path, extra):
        env.login("lee", PASSWORDS["lee"])
        assert "lee · Supervisor · Central" in env.client.get("/desk").text


@hypothesis_settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=40))
def test_any_name_is_one_escaped_filter_value(name: str) -> None:
    """Whatever the name, the filter keeps its shape: the value holds no raw `*()\\` or NUL,
    and unescaping it gives the name back."""
    import re

    s = msgspec.convert(
        {
            "url": "ldap://127.0.0.1",
            "user_base": PEOPLE,
            "user_filter": "(uid={user})",
            "groups": {f"cn=circulation,{GROUPS}": "desk"},
        },
        StaffDirectory,
    )
    built = directory.user_filter(s, name)
    assert built.startswith("(uid=") and built.endswith(")")
    inner = built[len("(uid=") : -1]
    assert not any(c in inner for c in "*()\x00")
    assert not re.search(r"\\(?![0-9a-f]{2})", inner)
    assert re.sub(r"\\([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), inner) == name
