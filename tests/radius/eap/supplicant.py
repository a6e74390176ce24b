"""wpa_supplicant's `eapol_test` (Debian eapoltest) as the 802.1X supplicant against a daemon:
its network blocks, one run, and the certificates a library would make for a trial
(`patron-bridge cert generate --ca`) plus an unrelated CA for a supplicant that does not trust
the server."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.harness import Daemon, run_cli

SECRET = "eap-test-secret-0123456789abcdef"

# The RADIUS part of a daemon that eapol_test talks to (certificates from make_certificates).
RADIUS_EAP = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[radius.eap]
certificate = "tls/server.pem"
key = "tls/server-key.pem"
ca = "tls/ca.pem"

[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""


def make_certificates(d: Daemon) -> None:
    """tls/{ca,server,server-key}.pem and other/{ca,...}.pem under the daemon's directory."""
    tmp = d.dir
    tls = tmp / "tls"
    made = run_cli(
        d.config,
        "cert",
        "generate",
        "--ca",
        str(tls / "ca.pem"),
        "--cert",
        str(tls / "server.pem"),
        "--key",
        str(tls / "server-key.pem"),
        "--host",
        "radius.library.example",
    )
    assert made.returncode == 0, made.stderr
    other = run_cli(
        d.config,
        "cert",
        "generate",
        "--ca",
        str(tmp / "other" / "ca.pem"),
        "--cert",
        str(tmp / "other" / "server.pem"),
        "--key",
        str(tmp / "other" / "server-key.pem"),
    )
    assert other.returncode == 0, other.stderr


def eapol_test(
    daemon: Daemon,
    network: dict[str, str],
    *,
    name: str,
    extra: tuple[str, ...] = (),
    address: tuple[str, int] | None = None,
    top: dict[str, str] | None = None,
    secret: str = SECRET,
) -> subprocess.CompletedProcess[str]:
    """One eapol_test run; its output is returned, never logged (it is not a daemon log).
    `top`: global settings before the network block (e.g. openssl_ecdh_curves)."""
    host, port = address or daemon.address("radius")
    lines = [f"    {key}={value}" for key, value in network.items()]
    conf = daemon.dir / f"eapol-{name}.conf"
    head = "".join(f"{key}={value}\n" for key, value in (top or {}).items())
    conf.write_text(head + "network={\n" + "\n".join(lines) + "\n}\n")
    return subprocess.run(
        [
            "eapol_test",
            "-c",
            str(conf),
            "-a",
            host,
            "-p",
            str(port),
            "-s",
            secret,
            "-t",
            "20",
            *list(extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ttls(daemon: Daemon, user: str, pin: str, **over: str) -> dict[str, str]:
    net = {
        "key_mgmt": "WPA-EAP",
        "eap": "TTLS",
        "identity": f'"{user}"',
        "anonymous_identity": '"anonymous@library.example"',
        "password": f'"{pin}"',
        "ca_cert": f'"{daemon.dir / "tls" / "ca.pem"}"',
        "phase2": '"auth=PAP"',
    }
    net.update(over)
    return net


def peap(daemon: Daemon, user: str, pin: str, inner: str = "GTC") -> dict[str, str]:
    return ttls(daemon, user, pin, eap="PEAP", phase2=f'"auth={inner}"')


def audited(
    daemon: Daemon, count: int, card_end: str, protocol: str = "radius-eap"
) -> list[dict[str, Any]]:
    """The daemon's audit lines of `protocol` for one card, once `count` are written (the log
    queue writes them shortly after the answer), or what there is after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        events = [
            e
            for e in daemon.audit_events()
            if e.get("protocol") == protocol and e["barcode"].endswith(card_end)
        ]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)
