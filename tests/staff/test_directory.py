"""Staff sign-in against a real directory (Debian's slapd, test-local on a loopback port):
the bind checks the password, the groups map to roles (the highest wins), a user in no mapped
group gets no access, the role holds on the server (403), and a directory that cannot be
reached is said so rather than read as a wrong password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.secret import Secret
from bridge.staff import directory
from bridge.staff.roles import Role
from bridge.staff.settings import StaffDirectory
from tests.harness import DEMO
from tests.portal.support import free_port
from tests.staff.slapd import GROUPS, PASSWORDS, PEOPLE, Slapd
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
    import msgspec

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
