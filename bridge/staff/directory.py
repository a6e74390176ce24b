"""Staff sign-in against the library's LDAP directory, with ldap3 (synchronous: callers run it
in a worker thread).

Finding the user: either a DN template (`user_dn`, `{name}` escaped as an RDN value) or
search-then-bind: bind as a service account (`bind_dn`, password read from
`bind_password_file`), search `user_base` with `user_filter` (`{name}`/`{user}` escaped as a
filter value, so `*`, `(`, `)`, `\\` and NUL are only data), and require exactly one entry.
Then bind as that DN with the staff member's password. The role comes from the groups: the
entry's `member_attribute` (e.g. `memberOf`, as Active Directory and OpenLDAP's memberof
overlay keep it), or else a search under `group_base` for groups whose `member` is that DN;
the highest mapped role wins. TLS: `ldaps://` or StartTLS, the server's certificate checked
against `ca_file` (or the system's CAs). Directory errors are reported by type only (a
server's message can echo the DN).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from bridge.core.secret import Secret
from bridge.staff.roles import Role
from bridge.staff.settings import StaffDirectory

_RANK = {Role.DESK: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}


class DirectoryUnavailable(Exception):
    """The directory could not be asked (down, TLS failure, timeout, bad service account)."""


def _normal(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def _path(base_dir: Path, value: str) -> Path:
    return Path(value) if Path(value).is_absolute() else base_dir / value


def user_filter(settings: StaffDirectory, name: str) -> str:
    """The search filter for this sign-in name, the name escaped as an LDAP filter value."""
    assert settings.user_filter is not None
    value = escape_filter_chars(name)
    return settings.user_filter.replace("{name}", value).replace("{user}", value)


def _server(settings: StaffDirectory, base_dir: Path) -> ldap3.Server:
    ldaps = settings.url.startswith("ldaps://")
    tls = None
    if ldaps or settings.start_tls:
        ca = None if settings.ca_file is None else str(_path(base_dir, settings.ca_file))
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca)
    return ldap3.Server(
        settings.url,
        use_ssl=ldaps,
        tls=tls,
        connect_timeout=settings.timeout,
        get_info=ldap3.NONE,
    )


def _open(
    settings: StaffDirectory, server: ldap3.Server, user: str | None, password: str | None
) -> ldap3.Connection:
    conn = ldap3.Connection(
        server,
        user=user,
        password=password,
        receive_timeout=max(1, round(settings.timeout)),
        read_only=True,
    )
    conn.open()
    if settings.start_tls and not conn.start_tls():
        conn.unbind()
        raise DirectoryUnavailable("StartTLS refused")
    return conn


def _find_user(
    settings: StaffDirectory, server: ldap3.Server, base_dir: Path, name: str
) -> tuple[str, set[str]] | None:
    """Search-then-bind's first half: (the one entry's DN, its `member_attribute` values)."""
    assert settings.user_base is not None
    password = None
    if settings.bind_password_file is not None:
        password = _path(base_dir, settings.bind_password_file).read_text().strip()
    conn = _open(settings, server, settings.bind_dn, password)
    try:
        if settings.bind_dn is not None and not conn.bind():
            raise DirectoryUnavailable("service account bind refused")
        attribute = settings.member_attribute
        conn.search(
            settings.user_base,
            user_filter(settings, name),
            attributes=[attribute] if attribute else [],
            size_limit=2,
            time_limit=int(settings.timeout),
        )
        entries = list(conn.entries)
    finally:
        conn.unbind()
    if len(entries) != 1:
        return None  # nobody, or a filter that is not unique: never guess which one
    entry = entries[0]
    groups: set[str] = set()
    if attribute and attribute in entry.entry_attributes:
        groups = {_normal(str(v)) for v in entry[attribute].values}
    return str(entry.entry_dn), groups


def sign_in(settings: StaffDirectory, base_dir: Path, name: str, password: Secret) -> Role | None:
    """The role the directory gives this name and password, or None (wrong password, unknown
    user, or in no mapped group)."""
    text = password.text()
    if not text:
        return None  # an empty password would be an unauthenticated bind: never a sign-in
    server = _server(settings, base_dir)
    try:
        groups: set[str] = set()
        if settings.user_filter is not None:
            found = _find_user(settings, server, base_dir, name)
            if found is None:
                return None
            user_dn, groups = found
        else:
            assert settings.user_dn is not None
            user_dn = settings.user_dn.format(name=escape_rdn(name))
        conn = _open(settings, server, user_dn, text)
        try:
            if not conn.bind():
                return None
            if settings.member_attribute is None:
                conn.search(
                    settings.group_base,
                    f"(&{settings.group_filter}(member={escape_filter_chars(user_dn)}))",
                    attributes=[],
                    size_limit=200,
                    time_limit=int(settings.timeout),
                )
                groups = {_normal(entry.entry_dn) for entry in conn.entries}
            elif settings.user_filter is None:  # a DN template: read the user's own entry
                conn.search(
                    user_dn,
                    "(objectClass=*)",
                    search_scope=ldap3.BASE,
                    attributes=[settings.member_attribute],
                    time_limit=int(settings.timeout),
                )
                for entry in conn.entries:
                    if settings.member_attribute in entry.entry_attributes:
                        values = entry[settings.member_attribute].values
                        groups = {_normal(str(v)) for v in values}
        finally:
            conn.unbind()
    except LDAPException as exc:
        raise DirectoryUnavailable(type(exc).__name__) from None
    except OSError as exc:  # the service account's password file
        raise DirectoryUnavailable(type(exc).__name__) from None
    mapped = {_normal(dn): Role(role) for dn, role in settings.groups.items()}
    roles = [role for dn, role in mapped.items() if dn in groups]
    return max(roles, key=_RANK.__getitem__) if roles else None
