"""The real pam_radius_auth (Debian 12: 2.0, which never sends Message-Authenticator), driven by
pamtester, against each `require_message_authenticator` mode.

The fixture writes a PAM service file with a unique name into /etc/pam.d (removed after) that
points the module at its own server file through `conf=`; each client's packets leave from
their own loopback address (the server file's source-address column), so one daemon holds a
`false`, a `true` and an `"auto"` client.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import in_ci, require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.udp import Nas

MODULE = Path("/lib/x86_64-linux-gnu/security/pam_radius_auth.so")
PAM_DIR = Path("/etc/pam.d")
SECRETS = {"lax": "pam-lax-secret-0123456789", "strict": "pam-strict-secret-012345"}
SECRETS["auto"] = "pam-auto-secret-012345678"
SOURCES = {"lax": "127.0.0.1", "strict": "127.0.0.5", "auto": "127.0.0.6"}
MODES = {"lax": "false", "strict": "true", "auto": '"auto"'}
SECTIONS = """
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
""" + "".join(
    f"""
[[radius.clients]]
name = "pam-{name}"
network = "{SOURCES[name]}/32"
secret = "{SECRETS[name]}"
require_message_authenticator = {MODES[name]}
"""
    for name in SOURCES
)


def require_pam() -> None:
    require_tool("pamtester")
    problem = None
    if not MODULE.exists():
        problem = "pam_radius_auth is not installed (Debian libpam-radius-auth)"
    elif not os.access(PAM_DIR, os.W_OK):
        problem = "this test writes a PAM service file into /etc/pam.d (needs root)"
    if problem is not None:
        if in_ci():
            pytest.fail(f"{problem}; .ci/run must provide it")
        pytest.skip(problem)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    require_pam()
    d = Daemon(tmp_path, SECTIONS).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def services(daemon: Daemon) -> Iterator[dict[str, str]]:
    """A PAM service per client: its own server file (server, secret, timeout, source)."""
    host, port = daemon.address("radius")
    made: dict[str, str] = {}
    try:
        for name, source in SOURCES.items():
            conf = daemon.dir / f"pam_radius_{name}.conf"
            conf.write_text(f"{host}:{port} {SECRETS[name]} 2 {source}\n")
            conf.chmod(0o600)
            service = f"patron-bridge-test-{name}-{uuid.uuid4().hex[:12]}"
            (PAM_DIR / service).write_text(
                f"auth required {MODULE.name} conf={conf}\naccount required pam_permit.so\n"
            )
            made[name] = service
        yield made
    finally:
        for service in made.values():
            (PAM_DIR / service).unlink(missing_ok=True)


def pamtester(service: str, user: str, pin: str) -> bool:
    result = subprocess.run(
        ["pamtester", service, user, "authenticate"],
        input=pin + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0


def test_pam_radius_auth_against_each_mode(daemon: Daemon, services: dict[str, str]) -> None:
    card = DEMO["active"]
    # false: pam_radius_auth 2.0 works (and a wrong PIN is refused)
    assert pamtester(services["lax"], card, DEMO_PIN)
    assert not pamtester(services["lax"], card, WRONG_PIN)
    # true (the default): its unsigned requests are dropped
    assert not pamtester(services["strict"], card, DEMO_PIN)
    # auto: answered while that address has never signed a request...
    assert pamtester(services["auto"], card, DEMO_PIN)
    signed = Nas(daemon.address("radius"), SECRETS["auto"].encode(), source=SOURCES["auto"])
    try:
        raw, auth = signed.access(card.encode(), DEMO_PIN.encode(), ma=True)
        assert signed.ask((raw, auth)).code == 2  # Access-Accept
    finally:
        signed.close()
    # ... and dropped once a signed one came from it
    assert not pamtester(services["auto"], card, DEMO_PIN)
    daemon.stop()
    events = [line for line in daemon.logs().splitlines() if line.startswith("{")]
    audited = [e for e in events if '"event":"auth"' in e]
    assert sum('"client":"pam-lax"' in e for e in audited) == 2
    assert sum('"client":"pam-auto"' in e for e in audited) == 2  # pam once, the signed NAS
    assert not any('"client":"pam-strict"' in e for e in audited)
    dropped = [e for e in events if '"event":"radius_dropped"' in e]
    assert any('"client":"pam-strict"' in e for e in dropped)
    assert any('"client":"pam-auto"' in e for e in dropped)
    assert all("Message-Authenticator" in e for e in dropped)
