"""SSSD itself (Debian sssd-ldap) against the posix view, over LDAPS.

The fixture runs `sssd -i` as root with its own config file (a domain name unique to the run,
so its cache starts empty; the NSS memory cache off), and nothing is changed in the machine's
nsswitch.conf or common PAM files: lookups go through `libnss_sss` directly (`getent -s sss`,
and `_nss_sss_getpwnam_r` through ctypes, since getent reads an all-digit name as a uid) and
logins through a PAM service file of its own (unique name, removed after) with `pam_sss`,
driven by pamtester. At start SSSD also runs its sudo refresh (the `sudo` responder is on).
Every search SSSD sent must have been answered with success.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import in_ci, require_tool
from tests.harness import Daemon
from tests.ldap.test_posix import ADULT_CARD, BASE_DN, CHILD_CARD, SSSD, SSSD_SECRET, sections
from tests.ldap.test_posix import store as posix_store
from tests.pins import DEMO_PIN, WRONG_PIN

PAM_DIR = Path("/etc/pam.d")
SSS_DB = Path("/var/lib/sss/db")


class Passwd(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("passwd", ctypes.c_char_p),
        ("uid", ctypes.c_uint),
        ("gid", ctypes.c_uint),
        ("gecos", ctypes.c_char_p),
        ("dir", ctypes.c_char_p),
        ("shell", ctypes.c_char_p),
    ]


def require_sssd() -> None:
    require_tool("sssd")
    require_tool("pamtester")
    problem = None
    if os.geteuid() != 0:
        problem = "SSSD runs as root (and this test writes a PAM service file)"
    elif pgrep_sssd():
        problem = "another sssd is running (its sockets are fixed paths)"
    if problem is not None:
        if in_ci():
            pytest.fail(problem)
        pytest.skip(problem)


def pgrep_sssd() -> bool:
    return subprocess.run(["pgrep", "-x", "sssd"], capture_output=True).returncode == 0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    require_sssd()
    tls = (
        'listen_tls = ["127.0.0.1:0"]\ntls_certificate = "ldap.crt"\ntls_key = "ldap.key"\n'
        "tls_generate = true\n"
    )
    text = sections(True).replace('listen = ["127.0.0.1:0"]\n', 'listen = ["127.0.0.1:0"]\n' + tls)
    d = Daemon(tmp_path, text, store=posix_store(tmp_path)).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def sssd(daemon: Daemon) -> Iterator[str]:
    host, port = daemon.address("ldap", 1)
    domain = f"bridgetest{uuid.uuid4().hex[:10]}"
    conf = daemon.dir / "sssd.conf"
    conf.write_text(f"""
[sssd]
services = nss, pam, sudo
domains = {domain}

[nss]
memcache_timeout = 0

[domain/{domain}]
id_provider = ldap
auth_provider = ldap
sudo_provider = ldap
ldap_uri = ldaps://{host}:{port}
ldap_search_base = {BASE_DN}
ldap_default_bind_dn = {SSSD}
ldap_default_authtok = {SSSD_SECRET}
ldap_tls_cacert = {daemon.dir / "ldap.crt"}
ldap_tls_reqcert = demand
cache_credentials = false
""")
    conf.chmod(0o600)
    # SSSD's own debug log is not the bridge's output, and its process ids and counters can
    # spell a test PIN by chance: it stays out of the session's PIN check (the daemon's log,
    # which is what the check is about, is in it through the harness).
    log = daemon.dir / "sssd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["sssd", "-i", "-d", "6", "-c", str(conf), "--logger=stderr"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield domain
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for leftover in SSS_DB.glob(f"*{domain}*"):
            leftover.unlink(missing_ok=True)


def getpwnam(name: str, deadline: float) -> tuple[int, int, bytes, bytes] | None:
    """(uid, gid, home, shell) through libnss_sss, retried until SSSD's responders are up
    (bounded)."""
    lib = ctypes.CDLL("libnss_sss.so.2")
    while True:
        pw, buf, err = Passwd(), ctypes.create_string_buffer(4096), ctypes.c_int()
        status = lib._nss_sss_getpwnam_r(
            name.encode(), ctypes.byref(pw), buf, len(buf), ctypes.byref(err)
        )
        if status == 1:  # NSS_STATUS_SUCCESS; the strings live in `buf`: copy them now
            return (pw.uid, pw.gid, pw.dir or b"", pw.shell or b"")
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def getent(*args: str) -> str:
    result = subprocess.run(["getent", "-s", "sss", *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def pam(service: str, user: str, pin: str) -> bool:
    result = subprocess.run(
        ["pamtester", service, user, "authenticate"],
        input=pin + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0


def test_sssd_lookups_and_pam_login(daemon: Daemon, sssd: str) -> None:
    user = getpwnam(ADULT_CARD, time.monotonic() + 60)
    assert user is not None, "SSSD never answered getpwnam"
    assert user == (200041, 5001, f"/home/patrons/{ADULT_CARD}".encode(), b"/usr/bin/adult-kiosk")
    by_uid = getent("passwd", "200044")
    assert by_uid.startswith(f"{CHILD_CARD}:*:200044:5002:")
    assert getent("group", "ADULT") == "ADULT:*:5001:"
    assert getent("group", "5002") == "JUVENILE:*:5002:"
    assert getent("initgroups", ADULT_CARD).startswith(ADULT_CARD)
    service = f"patron-bridge-sss-{uuid.uuid4().hex[:12]}"
    (PAM_DIR / service).write_text("auth required pam_sss.so\naccount required pam_permit.so\n")
    try:
        assert pam(service, ADULT_CARD, DEMO_PIN)
        assert not pam(service, ADULT_CARD, WRONG_PIN)
    finally:
        (PAM_DIR / service).unlink(missing_ok=True)
    daemon.stop()
    log = (daemon.dir / "sssd.log").read_text(errors="replace")
    results = re.findall(r"Search result: ([^\n]*)", log)
    assert results, "SSSD's log shows no search results (debug level too low?)"
    assert all(r.startswith("Success(0)") for r in results), sorted(set(results))
    assert "sudo" in log.lower()
    audited = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    assert [e["outcome"] for e in audited] == ["accepted", "bad_pin"]
    assert not [e for e in daemon.audit_events() if e["event"] == "ldap_enumeration_refused"]
    shutil.copy(daemon.dir / "sssd.log", daemon.dir / "sssd-kept.log")
