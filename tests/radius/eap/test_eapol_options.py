"""eapol_test against daemons configured otherwise than the defaults: a card blocked between
an authentication and its TTLS resumption, the outer realm in the audit, and `[radius.eap]`
`dh` / `groups` (TLS 1.2 DHE with an RSA certificate, one ECDHE group), each checked at start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.eap.relay import Relay
from tests.radius.eap.supplicant import (
    RADIUS_EAP,
    SECRET,
    audited,
    eapol_test,
    make_certificates,
    ttls,
)

SECTIONS = RADIUS_EAP


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_tool("eapol_test")
    d = Daemon(tmp_path_factory.mktemp("eap-block"), SECTIONS)
    make_certificates(d)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_card_blocked_between_runs_is_refused_on_resumption(daemon: Daemon) -> None:
    """First run: full TTLS/PAP, accepted. The card is then blocked (the staff CLI, on the
    store), and the supplicant's second run resumes the session: refused, audited."""
    card = DEMO["minor"]

    def block() -> None:
        done = daemon.cli("patron", "block", card, "Card reported stolen")
        assert done.returncode == 0, done.stderr

    relay = Relay(daemon.address("radius"), block)
    try:
        net = ttls(daemon, card, DEMO_PIN, anonymous_identity='"anonymous@Branch.Library.example"')
        result = eapol_test(daemon, net, name="blocked", extra=("-r1",), address=relay.address)
    finally:
        relay.close()
    assert relay.accepts == 1
    assert result.returncode != 0
    assert result.stdout.count("Handshake finished - resumed=1") == 1
    assert "MPPE keys OK: 1  mismatch: 1" in result.stdout  # keys from the first run only
    assert "EAP: Received EAP-Failure" in result.stdout
    # a third run: the refused session was dropped, so it is a full handshake (refused too)
    again = eapol_test(daemon, net, name="blocked-again")
    assert again.returncode != 0 and "resumed=1" not in again.stdout
    events = audited(daemon, 3, "0004")
    mine = [(e["outcome"], e["reason"], e.get("realm")) for e in events]
    assert mine == [
        ("accepted", "verified", "branch.library.example"),
        ("card_blocked", "resumed: Card reported stolen", "branch.library.example"),
        ("card_blocked", "Card reported stolen", "branch.library.example"),
    ]


def test_realm_that_is_not_a_domain_is_not_shown(daemon: Daemon) -> None:
    """The patron typed a card number and PIN as the outer identity: nothing of it is logged."""
    net = ttls(daemon, DEMO["active"], DEMO_PIN, anonymous_identity=f'"{DEMO["fines"]}@5961"')
    result = eapol_test(daemon, net, name="realm-junk")
    assert result.returncode == 0, result.stdout[-3000:]
    events = audited(daemon, 1, "0001")
    assert events[-1]["realm"] == "(not a domain name)"
    text = Path(daemon.stderr_path).read_text() + "".join(map(str, daemon.audit_events()))
    assert DEMO["fines"] not in text and "@5961" not in text


# --- dh and groups ------------------------------------------------------------------------------

TLS_SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[radius.eap]
certificate = "rsa.pem"
key = "rsa-key.pem"
dh = "dh.pem"
groups = ["P-384"]

[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA certificate (DHE suites authenticate with RSA) and RFC 7919's ffdhe2048."""
    require_tool("eapol_test")
    require_tool("openssl")
    tmp = tmp_path_factory.mktemp("eap-tls")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa-key.pem", "-out",
        "rsa.pem", "-days", "2", "-subj", "/CN=radius.library.example", cwd=tmp,
    )  # fmt: skip
    openssl("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048",
            "-out", "dh.pem", cwd=tmp)  # fmt: skip
    return tmp


@pytest.fixture(scope="module")
def tls_daemon(tls_dir: Path) -> Iterator[Daemon]:
    d = Daemon(tls_dir, TLS_SECTIONS).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("ciphers", "suite"),
    [
        ("DHE-RSA-AES128-GCM-SHA256", "0x9e"),  # offered only because of the dh file
        ("ECDHE-RSA-AES128-GCM-SHA256", "0xc02f"),  # over P-384, the one group configured
    ],
)
def test_dh_and_groups(tls_daemon: Daemon, ciphers: str, suite: str) -> None:
    """This eapol_test build has no openssl_ecdh_curves, so that a group outside `groups` is
    refused is shown by tests/radius/eap/test_tunnel.py; here: both key exchanges work."""
    net = ttls(tls_daemon, DEMO["active"], DEMO_PIN, openssl_ciphers=f'"{ciphers}"')
    net["ca_cert"] = f'"{tls_daemon.dir / "rsa.pem"}"'
    result = eapol_test(tls_daemon, net, name=f"tls-{ciphers}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout
    assert f"OpenSSL: Server selected cipher suite {suite}\n" in result.stdout


def test_without_dh_file_dhe_is_not_offered(tls_dir: Path, tmp_path: Path) -> None:
    for name in ("rsa.pem", "rsa-key.pem"):
        (tmp_path / name).symlink_to(tls_dir / name)
    d = Daemon(tmp_path, TLS_SECTIONS.replace('dh = "dh.pem"\n', "")).start()
    try:
        net = ttls(d, DEMO["active"], DEMO_PIN, openssl_ciphers='"DHE-RSA-AES128-GCM-SHA256"')
        net["ca_cert"] = f'"{tmp_path / "rsa.pem"}"'
        result = eapol_test(d, net, name="no-dh")
    finally:
        d.stop()
    assert result.returncode != 0 and "FAILURE" in result.stdout


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('dh = "rsa.pem"', r"radius\.eap\.dh: cannot load '.*rsa\.pem'"),
        ('dh = "nowhere.pem"', r"radius\.eap\.dh: cannot load '.*nowhere\.pem'"),
        ('groups = ["P-999"]', r"radius\.eap\.groups: OpenSSL does not know P-999"),
        ('groups = ["X25519;rm"]', r"radius\.eap\.groups: not a group name"),
    ],
)
def test_bad_dh_or_groups_stop_the_daemon_in_one_line(
    tls_dir: Path, tmp_path: Path, setting: str, message: str
) -> None:
    for name in ("rsa.pem", "rsa-key.pem"):
        (tmp_path / name).symlink_to(tls_dir / name)
    sections = TLS_SECTIONS.replace('dh = "dh.pem"\ngroups = ["P-384"]\n', setting + "\n")
    with pytest.raises(RuntimeError, match=message):
        Daemon(tmp_path, sections).start()
