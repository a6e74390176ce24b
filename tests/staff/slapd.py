"""A test-local OpenLDAP (Debian's slapd) as the library's staff directory: its own config
and database in a temporary directory, listening on a loopback port, ready when slapd says
"slapd starting" (read from its debug output, never a sleep).

With `tls=True` it also answers LDAPS on a second port and StartTLS on the first, with a
certificate signed by a private CA that `bridge.tls.generate_chain` (what `patron-bridge cert
generate --ca` runs) writes beside it. The memberof overlay is loaded and each person's
`memberOf` is in the data, as Active Directory keeps it; a service account `desk-svc` may
search."""

from __future__ import annotations

import select
import socket
import subprocess
import time
from pathlib import Path

from bridge.tls import generate_chain
from tests.conftest import require_tool
from tests.portal.support import free_port

SUFFIX = "dc=staff,dc=example"
GROUPS = f"ou=groups,{SUFFIX}"
PEOPLE = f"ou=people,{SUFFIX}"
PASSWORDS = {"lee": "lee directory pw 1", "kim": "kim directory pw 2", "noor": "noor dir pw 3"}
MEMBER_OF = {
    "lee": [f"cn=circulation,{GROUPS}", f"cn=circ-supervisors,{GROUPS}"],
    "kim": [f"cn=circulation,{GROUPS}"],
    "noor": [],
}
SERVICE_DN = f"cn=desk-svc,{PEOPLE}"
SERVICE_PASSWORD = "desk service pw 9"  # the service account's, in a file the test writes


def _ldif() -> str:
    people = "".join(
        f"""
dn: uid={uid},{PEOPLE}
objectClass: inetOrgPerson
uid: {uid}
cn: {uid}
sn: {uid}
userPassword: {password}
"""
        + "".join(f"memberOf: {group}\n" for group in MEMBER_OF[uid])
        for uid, password in PASSWORDS.items()
    )
    return f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: staff
dc: staff

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: {GROUPS}
objectClass: organizationalUnit
ou: groups
{people}
dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: desk-svc
userPassword: {SERVICE_PASSWORD}

dn: cn=circulation,{GROUPS}
objectClass: groupOfNames
cn: circulation
member: uid=kim,{PEOPLE}
member: uid=lee,{PEOPLE}

dn: cn=circ-supervisors,{GROUPS}
objectClass: groupOfNames
cn: circ-supervisors
member: uid=lee,{PEOPLE}
"""


class Slapd:
    def __init__(self, tmp: Path, *, tls: bool = False) -> None:
        self.binary = require_tool("/usr/sbin/slapd")
        self.slapadd = require_tool("/usr/sbin/slapadd")
        self.dir = tmp / "slapd"
        (self.dir / "db").mkdir(parents=True)
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url: str | None = None
        self.ca_file = self.dir / "ca.pem"
        tls_lines = ""
        if tls:
            self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}"
            cert, key = self.dir / "cert.pem", self.dir / "key.pem"
            generate_chain(self.ca_file, self.dir / "ca-key.pem", cert, key, ["127.0.0.1"])
            tls_lines = (
                f"TLSCACertificateFile {self.ca_file}\n"
                f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
            )
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(
            f"""modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
{tls_lines}
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {self.dir}/slapd.pid
database mdb
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
directory {self.dir}/db
overlay memberof
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""
        )
        (self.dir / "data.ldif").write_text(_ldif())
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Slapd:
        subprocess.run(
            [self.slapadd, "-f", str(self.conf), "-l", str(self.dir / "data.ldif")],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [self.binary, "-f", str(self.conf), "-h", self._listeners(), "-d", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = b""
        while b"slapd starting" not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stderr], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise RuntimeError(f"slapd not ready: {seen[-500:]!r}")
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"slapd exited: {seen[-500:]!r}")
            seen += line
        # "slapd starting" comes just before the listener thread calls listen(): the first
        # connection that succeeds is the readiness signal (waiting on slapd's output between
        # tries, never a fixed sleep).
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return self
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("slapd never accepted a connection") from None
                ready, _, _ = select.select([self.proc.stderr], [], [], 0.05)
                if ready:
                    self.proc.stderr.readline()

    def _listeners(self) -> str:
        urls = [f"{self.url}/"] + ([f"{self.ldaps_url}/"] if self.ldaps_url else [])
        return " ".join(urls)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
