"""Reload with real clients holding connections: SIP2 and LDAP connections stay up across it,
one whose account was removed is closed at its next request with the protocol's own answer,
RADIUS takes its new secret, restart-only changes are named, a broken config is refused and the
old one keeps running, and the reload is audited without secret values."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from ldap3 import Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from pyrad import packet as pp

from tests.harness import DEMO, Daemon
from tests.metrics.test_daemon_metrics import DICTIONARY
from tests.pins import DEMO_PIN, NEW_PIN

BASE_DN = "dc=library,dc=example"
EZPROXY = f"cn=ezproxy,ou=services,{BASE_DN}"
DESK = f"cn=desk,ou=services,{BASE_DN}"


def sections(*, kiosk: bool = True, desk: bool = True, secret: str = "radius-old-secret-1") -> str:
    text = """
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""
    if kiosk:
        text += """[[sip2.accounts]]
login = "kiosk"
password = "kiosk-secret-1"
institution = "MAIN"
"""
    else:
        text += """[[sip2.accounts]]
login = "newdesk"
password = "newdesk-secret-1"
institution = "MAIN"
"""
    text += f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
[[ldap.service_accounts]]
dn = "{EZPROXY}"
password = "ezproxy-secret-1"
"""
    if desk:
        text += f"""[[ldap.service_accounts]]
dn = "{DESK}"
password = "desk-secret-1"
"""
    text += f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{secret}"
"""
    return text


class Sip2:
    def __init__(self, daemon: Daemon, login: str, password: str) -> None:
        self.sock = socket.create_connection(daemon.address("sip2"), timeout=20)
        self.buf = b""
        self.login_reply = self.ask(f"9300CN{login}|CO{password}|CPdesk|")

    def ask(self, message: str) -> str:
        self.sock.sendall(message.encode() + b"\r")
        while b"\r" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return ""  # closed by the server
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\r")
        return frame.decode("cp850")

    def check(self, barcode: str, pin: str) -> str:
        return self.ask(f"63001{'20240101    101010'}{' ' * 10}AOMAIN|AA{barcode}|AC|AD{pin}|")

    def close(self) -> None:
        self.sock.close()


def ldap_service(daemon: Daemon, dn: str, password: str) -> Connection:
    host, port = daemon.address("ldap")
    conn = Connection(Server(host, port, get_info="NO_INFO"), dn, password, raise_exceptions=False)
    assert conn.bind(), conn.result
    return conn


def find(conn: Connection, barcode: str) -> bool:
    try:
        ok = conn.search(f"ou=patrons,{BASE_DN}", f"(uid={barcode})", attributes=["cn"])
    except LDAPException:
        return False
    return bool(ok and conn.entries)


def radius(daemon: Daemon, secret: str) -> int | None:
    from pyrad.client import Client, Timeout
    from pyrad.dictionary import Dictionary

    host, port = daemon.address("radius")
    client = Client(
        server=host,
        authport=port,
        secret=secret.encode(),
        dict=Dictionary(str(DICTIONARY)),
        retries=1,
        timeout=2,  # a wrong secret gets no answer at all: how long to wait for none
    )
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=DEMO["active"])
    request["User-Password"] = request.PwCrypt(DEMO_PIN)
    request.add_message_authenticator()
    try:
        return int(client.SendPacket(request).code)
    except Timeout:
        return None


def audit_events(daemon: Daemon, name: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while True:
        found = [e for e in daemon.audit_events() if e.get("event") == name]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_reload_keeps_connections_and_closes_removed_accounts(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, sections())
    with daemon:
        selfcheck = Sip2(daemon, "selfcheck", "sc-secret-1")
        kiosk = Sip2(daemon, "kiosk", "kiosk-secret-1")
        ezproxy = ldap_service(daemon, EZPROXY, "ezproxy-secret-1")
        desk = ldap_service(daemon, DESK, "desk-secret-1")
        try:
            assert selfcheck.login_reply.startswith("941") and kiosk.login_reply.startswith("941")
            assert find(ezproxy, DEMO["active"]) and find(desk, DEMO["active"])
            assert radius(daemon, "radius-old-secret-1") == pp.AccessAccept

            text = daemon.config.read_text().replace(sections(), "")
            daemon.config.write_text(
                text
                + sections(kiosk=False, desk=False, secret="radius-new-secret-2")
                + "\n[cache]\nttl = 10\n"
            )
            answer = daemon.cli("reload")
            assert answer.returncode == 0, answer.stderr
            assert answer.stdout == (
                "reloaded: applied ldap.service_accounts, radius.clients, sip2.accounts; "
                "restart needed for cache.ttl\n"
            )

            # Connections whose accounts remain stay up and keep working.
            assert "|CQY|" in selfcheck.check(DEMO["active"], DEMO_PIN)
            assert find(ezproxy, DEMO["minor"])
            # The removed SIP2 account's connection is closed at its next request.
            assert kiosk.check(DEMO["active"], DEMO_PIN) == ""
            # The removed LDAP account's connection gets a Notice of Disconnection.
            assert not find(desk, DEMO["minor"])
            assert desk.closed  # ldap3 closes on the Notice of Disconnection
            # New and removed accounts for new connections.
            assert Sip2(daemon, "newdesk", "newdesk-secret-1").login_reply.startswith("941")
            assert Sip2(daemon, "kiosk", "kiosk-secret-1").login_reply.startswith("940")
            host, port = daemon.address("ldap")
            gone = Connection(Server(host, port, get_info="NO_INFO"), DESK, "desk-secret-1")
            assert not gone.bind()
            # RADIUS: the new secret is answered, the old one is dropped.
            assert radius(daemon, "radius-new-secret-2") == pp.AccessAccept
            assert radius(daemon, "radius-old-secret-1") is None
        finally:
            for client in (selfcheck, kiosk):
                client.close()
            for conn in (ezproxy, desk):
                conn.unbind()
    [event] = audit_events(daemon, "config_reloaded")
    assert event["actor"] == "control:root" or str(event["actor"]).startswith("control:")
    assert event["applied"] == ["ldap.service_accounts", "radius.clients", "sip2.accounts"]
    assert event["restart_needed"] == ["cache.ttl"]
    logs = daemon.logs()
    for secret in ("newdesk-secret-1", "radius-new-secret-2", "desk-secret-1"):
        assert secret not in logs


def test_a_broken_config_is_refused_and_the_old_one_keeps_running(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, sections())
    with daemon:
        good = daemon.config.read_text()
        daemon.config.write_text(good + "\n[pin]\nmin_length = 9\nmax_length = 4\n")
        answer = daemon.cli("reload")
        assert answer.returncode == 1
        assert answer.stderr == (
            f"patron-bridge: reload refused: {daemon.config}: pin.min_length: greater than "
            "pin.max_length (the running config is unchanged)\n"
        )
        daemon.config.write_text(good + "\n[pin\n")  # not even TOML: nothing is sent
        syntax = daemon.cli("reload")
        assert syntax.returncode == 2
        assert syntax.stderr.startswith(f"patron-bridge: config: {daemon.config}: (syntax):")
        kiosk = Sip2(daemon, "kiosk", "kiosk-secret-1")
        try:
            assert kiosk.login_reply.startswith("941")
        finally:
            kiosk.close()
        [event] = audit_events(daemon, "config_reload_refused")
        assert "pin.min_length" in str(event["error"])


@pytest.mark.parametrize("how", ["SIGHUP"])
def test_sighup_reloads(tmp_path: Path, how: str) -> None:
    daemon = Daemon(tmp_path, sections())
    with daemon:
        assert daemon.proc is not None
        text = daemon.config.read_text().replace(sections(), sections(kiosk=False))
        daemon.config.write_text(text)
        daemon.proc.send_signal(signal.SIGHUP)
        [event] = audit_events(daemon, "config_reloaded")
        assert event["actor"] == how
        assert event["applied"] == ["sip2.accounts"]
        client = Sip2(daemon, "newdesk", "newdesk-secret-1")
        try:
            assert client.login_reply.startswith("941")
        finally:
            client.close()


def test_reload_without_a_daemon(tmp_path: Path) -> None:
    result = Daemon(tmp_path, sections()).cli("reload")
    assert (result.returncode, result.stderr) == (
        1,
        "patron-bridge: refused: no daemon is running with this config: nothing to reload\n",
    )


LDAPS = f"""
[ldap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
tls_certificate = "ldap.crt"
tls_key = "ldap.key"
tls_generate = true
[[ldap.service_accounts]]
dn = "{EZPROXY}"
password = "ezproxy-secret-1"
"""


def served_certificate(daemon: Daemon) -> str:
    return ssl.get_server_certificate(daemon.address("ldap", 1))


def test_certificate_rotation_and_pin_policy_by_reload(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, LDAPS)
    with daemon:
        before = served_certificate(daemon)
        host, port = daemon.address("ldap", 1)
        held = Connection(
            Server(host, port, use_ssl=True, tls=Tls(validate=ssl.CERT_NONE), get_info="NO_INFO"),
            EZPROXY,
            "ezproxy-secret-1",
            raise_exceptions=False,
        )
        assert held.bind()
        try:
            made = daemon.cli(
                "cert", "generate", "--cert", "ldap.crt", "--key", "ldap.key", "--host", "new.test"
            )
            assert made.returncode == 0, made.stderr
            daemon.config.write_text(
                daemon.config.read_text() + "\n[pin]\nmin_length = 6\nmax_length = 6\n"
            )
            answer = daemon.cli("reload")
            assert answer.returncode == 0, answer.stderr
            assert answer.stdout == "reloaded: applied pin.max_length, pin.min_length\n"
            after = served_certificate(daemon)
            assert after != before
            assert ssl.PEM_cert_to_DER_cert(after) == ssl.PEM_cert_to_DER_cert(
                (tmp_path / "ldap.crt").read_text()
            )
            assert find(held, DEMO["active"])  # the connection made before stays up
            # The PIN policy is the new one: a four-digit PIN is now refused.
            plain = ldap_service(daemon, EZPROXY, "ezproxy-secret-1")
            plain.unbind()
            patron_dn = f"uid={DEMO['active']},ou=patrons,{BASE_DN}"
            patron = Connection(
                Server(*daemon.address("ldap"), get_info="NO_INFO"),
                patron_dn,
                DEMO_PIN,
                raise_exceptions=False,
            )
            assert patron.bind()
            changed = patron.extend.standard.modify_password(
                patron_dn, old_password=DEMO_PIN, new_password=NEW_PIN
            )
            assert not changed
            assert "6" in patron.result["message"]
            patron.unbind()
        finally:
            held.unbind()


def test_a_bad_certificate_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, LDAPS)
    with daemon:
        before = served_certificate(daemon)
        (tmp_path / "ldap.crt").write_text("not a certificate\n")
        answer = daemon.cli("reload")
        assert answer.returncode == 1
        assert answer.stderr.startswith(
            f"patron-bridge: reload refused: {daemon.config}: ldap.tls_certificate: cannot load:"
        )
        assert served_certificate(daemon) == before


def wait_for_text(path: Path, text: str) -> bool:
    deadline = time.monotonic() + 20
    while text not in path.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_log_level_changes_on_reload(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, sections() + '\n[log]\nlevel = "warning"\n')
    with daemon:
        first = Sip2(daemon, "selfcheck", "sc-secret-1")
        try:
            assert "|CQY|" in first.check(DEMO["active"], DEMO_PIN)
        finally:
            first.close()
        # Audit lines are records: written whatever the level.
        assert wait_for_text(daemon.audit_path, '"outcome":"accepted"')
        daemon.config.write_text(daemon.config.read_text().replace('"warning"', '"debug"'))
        answer = daemon.cli("reload")
        assert (answer.returncode, answer.stdout) == (0, "reloaded: applied log.level\n")
        second = Sip2(daemon, "selfcheck", "sc-secret-1")
        second.close()
        assert wait_for_text(daemon.stderr_path, '"event":"sip2_connected"')
    # Only the connection made after the reload was logged at debug level.
    assert daemon.stderr_path.read_text().count('"event":"sip2_connected"') == 1


def test_the_pin_pages_certificate_rotates_by_reload(tmp_path: Path) -> None:
    """The PIN pages serving HTTPS themselves: a reload serves the new certificate to new
    handshakes, without a restart."""
    from bridge.tls import generate_self_signed

    generate_self_signed(tmp_path / "portal.crt", tmp_path / "portal.key", ["127.0.0.1"])
    pages = (
        '[portal]\nlisten = "127.0.0.1:0"\nbase_url = "https://127.0.0.1"\n'
        'tls_cert = "portal.crt"\ntls_key = "portal.key"\n'
    )
    with Daemon(tmp_path, pages) as daemon:
        before = ssl.get_server_certificate(daemon.address("portal"))
        made = daemon.cli(
            "cert", "generate", "--cert", "portal.crt", "--key", "portal.key", "--host", "new.test"
        )
        assert made.returncode == 0, made.stderr
        answer = daemon.cli("reload")
        assert answer.returncode == 0, answer.stderr
        after = ssl.get_server_certificate(daemon.address("portal"))
        assert after != before
        assert ssl.PEM_cert_to_DER_cert(after) == ssl.PEM_cert_to_DER_cert(
            (tmp_path / "portal.crt").read_text()
        )


def test_the_metrics_certificate_rotates_by_reload(tmp_path: Path) -> None:
    """The metrics listener serving HTTPS: a reload hands new handshakes the new certificate,
    and the scrape keeps answering; a pair that does not load is refused and the old one kept."""
    from bridge.tls import generate_self_signed

    generate_self_signed(tmp_path / "metrics.crt", tmp_path / "metrics.key", ["127.0.0.1"])
    scrape = (
        '[metrics]\nlisten = "127.0.0.1:0"\ntls_cert = "metrics.crt"\ntls_key = "metrics.key"\n'
    )
    with Daemon(tmp_path, scrape) as daemon:
        address = daemon.address("metrics")
        before = ssl.get_server_certificate(address)
        made = daemon.cli(
            "cert",
            "generate",
            "--cert",
            "metrics.crt",
            "--key",
            "metrics.key",
            "--host",
            "new.test",
        )
        assert made.returncode == 0, made.stderr
        answer = daemon.cli("reload")
        # the files changed, the config did not: the pair is loaded again on every reload
        assert (answer.returncode, answer.stdout) == (0, "reloaded: no live change\n")
        after = ssl.get_server_certificate(address)
        assert after != before
        assert ssl.PEM_cert_to_DER_cert(after) == ssl.PEM_cert_to_DER_cert(
            (tmp_path / "metrics.crt").read_text()
        )
        context = ssl.create_default_context(cafile=str(tmp_path / "metrics.crt"))
        context.check_hostname = False
        with (
            socket.create_connection(address, timeout=20) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(65536).startswith(b"HTTP/1.1 200")
        (tmp_path / "metrics.key").write_text("not a key\n")
        refused = daemon.cli("reload")
        assert refused.returncode != 0
        assert "metrics.tls_cert: cannot load" in refused.stderr
        assert ssl.get_server_certificate(address) == after


def test_turning_metrics_https_on_needs_a_restart(tmp_path: Path) -> None:
    from bridge.tls import generate_self_signed

    generate_self_signed(tmp_path / "metrics.crt", tmp_path / "metrics.key", ["127.0.0.1"])
    with Daemon(tmp_path, '[metrics]\nlisten = "127.0.0.1:0"\n') as daemon:
        daemon.config.write_text(
            daemon.config.read_text() + 'tls_cert = "metrics.crt"\ntls_key = "metrics.key"\n'
        )
        answer = daemon.cli("reload")
        assert answer.returncode == 0, answer.stderr
        assert "restart needed for metrics.tls_cert, metrics.tls_key" in answer.stdout


def test_log_format_changes_on_reload(tmp_path: Path) -> None:
    """JSON lines before the reload, key=value lines after it, on the same stream."""
    daemon = Daemon(tmp_path, sections() + '\n[log]\nlevel = "debug"\nformat = "json"\n')
    with daemon:
        Sip2(daemon, "selfcheck", "sc-secret-1").close()
        assert wait_for_text(daemon.stderr_path, '"event":"sip2_connected"')
        daemon.config.write_text(daemon.config.read_text().replace('"json"', '"console"'))
        answer = daemon.cli("reload")
        assert (answer.returncode, answer.stdout) == (0, "reloaded: applied log.format\n")
        Sip2(daemon, "selfcheck", "sc-secret-1").close()
        assert wait_for_text(daemon.stderr_path, "sip2_connected ")
    lines = [
        line for line in daemon.stderr_path.read_text().splitlines() if "sip2_connected" in line
    ]
    assert len(lines) == 2
    assert lines[0].startswith("{") and '"event":"sip2_connected"' in lines[0]
    assert not lines[1].startswith("{") and "[debug    ] sip2_connected" in lines[1]


def rotate(daemon: Daemon, tmp_path: Path, name: str, address: tuple[str, int]) -> None:
    """Make a new pair for `name`, reload, and check new handshakes on `address` get it."""
    before = ssl.get_server_certificate(address)
    made = daemon.cli(
        "cert", "generate", "--cert", f"{name}.crt", "--key", f"{name}.key", "--host", "new.test"
    )
    assert made.returncode == 0, made.stderr
    answer = daemon.cli("reload")
    assert answer.returncode == 0, answer.stderr
    after = ssl.get_server_certificate(address)
    assert after != before
    assert ssl.PEM_cert_to_DER_cert(after) == ssl.PEM_cert_to_DER_cert(
        (tmp_path / f"{name}.crt").read_text()
    )


def test_the_sign_in_listener_rotates_with_the_pin_pages(tmp_path: Path) -> None:
    """The OpenID Connect/SAML listener serves the PIN pages' pair: one reload rotates both
    (before, the sign-in listener kept the old certificate until a restart)."""
    from bridge.tls import generate_self_signed
    from tests.federation.support import SECRET, sections
    from tests.portal.support import free_port

    (tmp_path / "vendor-secret").write_text(SECRET + "\n")
    generate_self_signed(tmp_path / "portal.crt", tmp_path / "portal.key", ["127.0.0.1"])
    config = sections(free_port()).replace(
        'library_name = "Riverside Public Library"\n',
        'library_name = "Riverside Public Library"\n'
        'tls_cert = "portal.crt"\ntls_key = "portal.key"\n',
        1,
    )
    with Daemon(tmp_path, config) as daemon:
        rotate(daemon, tmp_path, "portal", daemon.address("oidc"))
        assert ssl.get_server_certificate(daemon.address("portal")) == (
            ssl.get_server_certificate(daemon.address("oidc"))
        )


def test_the_staff_desk_certificate_rotates_by_reload(tmp_path: Path) -> None:
    """The staff desk serving HTTPS: a new pair by reload; HTTPS turned off stays a restart."""
    from bridge.tls import generate_self_signed
    from tests.staff.support import STAFF_SECTION

    generate_self_signed(tmp_path / "staff.crt", tmp_path / "staff.key", ["127.0.0.1"])
    config = STAFF_SECTION + 'tls_cert = "staff.crt"\ntls_key = "staff.key"\n'
    with Daemon(tmp_path, config) as daemon:
        address = daemon.address("staff")
        rotate(daemon, tmp_path, "staff", address)
        (tmp_path / "staff.key").write_text("not a key\n")
        refused = daemon.cli("reload")
        assert refused.returncode != 0
        assert "staff.tls_cert: cannot load" in refused.stderr
        assert ssl.get_server_certificate(address) == (tmp_path / "staff.crt").read_text()
        # The running listener still serves HTTPS until the restart: its pair must still load.
        generate_self_signed(tmp_path / "staff.crt", tmp_path / "staff.key", ["127.0.0.1"])
        daemon.config.write_text(
            daemon.config.read_text().replace('tls_cert = "staff.crt"\ntls_key = "staff.key"\n', "")
        )
        answer = daemon.cli("reload")
        assert answer.returncode == 0, answer.stderr
        assert "restart needed for staff.tls_cert, staff.tls_key" in answer.stdout
