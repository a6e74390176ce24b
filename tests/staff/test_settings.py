"""`[staff]` config: its cross-key rules, as `patron-bridge check-config` reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, loads
from tests.harness import base_config

LDAPS = (
    '[staff]\nauth = "ldap"\n[staff.ldap]\nurl = "ldaps://dc.example.org"\n'
    'groups = { "cn=a,dc=x" = "desk" }\n'
)


def load(tmp_path: Path, staff: str) -> None:
    loads(base_config(tmp_path) + staff, source="bridge.toml", base_dir=tmp_path)


@pytest.mark.parametrize(
    ("staff", "message"),
    [
        ('[staff]\nbase_url = "http://desk.example.org"', "staff.base_url: must use https://"),
        ('[staff]\nlisten = "nowhere"', "staff.listen"),
        ('[staff]\ntls_cert = "c.pem"', "staff.tls_cert: give both"),
        ("[staff]\nbranches = []", "staff.branches"),
        ('[staff]\nauth = "ldap"', 'staff.ldap: auth = "ldap" needs'),
        ('[staff]\nauth = "kerberos"', "staff.auth"),
        ("[staff]\nsession_idle_minutes = 0", "staff.session_idle_minutes"),
        (
            '[staff]\nauth = "ldap"\n[staff.ldap]\nurl = "ldap://dc.example.org"\n'
            'user_dn = "uid={name},dc=x"\ngroup_base = "dc=x"\ngroups = { "cn=a,dc=x" = "desk" }',
            "staff.ldap.url: use ldaps://",
        ),
        (
            '[staff]\nauth = "ldap"\n[staff.ldap]\nurl = "ldaps://dc.example.org"\n'
            'user_dn = "uid=fixed,dc=x"\ngroup_base = "dc=x"\ngroups = { "cn=a,dc=x" = "root" }',
            "staff.ldap.groups",
        ),
        (LDAPS + 'user_filter = "(uid={user})"\ngroup_base = "dc=x"', "staff.ldap.user_base"),
        (LDAPS + 'user_base = "dc=x"\nuser_filter = "(uid=fixed)"', "staff.ldap.user_filter"),
        (LDAPS + 'user_base = "dc=x"\nuser_filter = "uid={user}"', "must be an LDAP filter"),
        (
            LDAPS + 'user_base = "dc=x"\nuser_filter = "(uid={user})"\nbind_dn = "cn=svc"',
            "staff.ldap.bind_dn: give bind_dn and bind_password_file",
        ),
        (
            LDAPS + 'user_dn = "uid={name},dc=x"\nuser_base = "dc=x"\nuser_filter = "(uid={user})"',
            "staff.ldap.user_dn: give user_dn or user_filter",
        ),
        (LDAPS + 'user_dn = "uid={name},dc=x"', "staff.ldap.group_base"),
    ],
)
def test_refused(tmp_path: Path, staff: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load(tmp_path, staff)


def test_defaults_and_minors(tmp_path: Path) -> None:
    config = loads(
        base_config(tmp_path) + '[staff]\nminor_categories = ["Juvenile", " J "]',
        source="bridge.toml",
        base_dir=tmp_path,
    )
    assert config.staff is not None
    assert config.staff.is_minor("JUVENILE") and config.staff.is_minor("j")
    assert not config.staff.is_minor("ADULT") and not config.staff.is_minor("")
    assert config.staff.listen == "127.0.0.1:8081" and config.staff.auth == "local"


def test_search_then_bind_as_active_directory_would_have_it(tmp_path: Path) -> None:
    """The AD-shaped configuration of docs/staff.md loads (it was not run against AD)."""
    load(
        tmp_path,
        LDAPS
        + 'user_base = "OU=Staff,DC=library,DC=example"\n'
        + 'user_filter = "(&(objectCategory=person)(sAMAccountName={user}))"\n'
        + 'bind_dn = "CN=svc-desk,OU=Service,DC=library,DC=example"\n'
        + 'bind_password_file = "ad-password"\nmember_attribute = "memberOf"\n',
    )
