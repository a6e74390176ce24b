"""Staff sign-in against the library's LDAP directory, with ldap3 (synchronous: callers run it
in a worker thread). Bind as the user's DN with the password; then find the groups under
`group_base` whose `member` is that DN and map them to a role. Directory errors are reported by
type only (a server's message can echo the DN)."""

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
    """The directory could not be asked (down, TLS failure, timeout)."""


def _normal(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def sign_in(settings: StaffDirectory, base_dir: Path, name: str, password: Secret) -> Role | None:
    """The role the directory gives this name and password, or None (wrong password, unknown
    user, or in no mapped group)."""
    text = password.text()
    if not text:
        return None  # an empty password would be an unauthenticated bind: never a sign-in
    user_dn = settings.user_dn.format(name=escape_rdn(name))
    tls = None
    if settings.url.startswith("ldaps://") or settings.start_tls:
        ca = settings.ca_file
        ca_path = None if ca is None else str(Path(ca) if Path(ca).is_absolute() else base_dir / ca)
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_path)
    server = ldap3.Server(
        settings.url,
        use_ssl=settings.url.startswith("ldaps://"),
        tls=tls,
        connect_timeout=settings.timeout,
        get_info=ldap3.NONE,
    )
    conn = ldap3.Connection(
        server,
        user=user_dn,
        password=text,
        receive_timeout=max(1, round(settings.timeout)),
        read_only=True,
    )
    try:
        conn.open()
        if settings.start_tls and not conn.start_tls():
            raise DirectoryUnavailable("StartTLS refused")
        if not conn.bind():
            return None
        conn.search(
            settings.group_base,
            f"(&{settings.group_filter}(member={escape_filter_chars(user_dn)}))",
            attributes=[],
            size_limit=200,
            time_limit=int(settings.timeout),
        )
        found = {_normal(entry.entry_dn) for entry in conn.entries}
    except LDAPException as exc:
        raise DirectoryUnavailable(type(exc).__name__) from None
    finally:
        conn.unbind()
    mapped = {_normal(dn): Role(role) for dn, role in settings.groups.items()}
    roles = [role for dn, role in mapped.items() if dn in found]
    return max(roles, key=_RANK.__getitem__) if roles else None
