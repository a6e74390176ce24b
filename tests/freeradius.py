"""Debian's FreeRADIUS 3 for tests and benchmarks: a copy of /etc/freeradius/3.0 with the sample
files of conf/freeradius (the "FreeRADIUS in front of the bridge" setup that docs/radius.md
shows) moved to a temporary directory, on a free port, in the foreground, run as the current
user. What changes from the sample is only what a second copy on one machine needs: paths,
ports, the bridge's address; and, for the benchmark, the inner server (`inner`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bridge.radius import packet as rp

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "conf" / "freeradius"
DEBIAN = Path("/etc/freeradius/3.0")


def free_udp_port() -> int:
    """A loopback UDP port free right now: FreeRADIUS cannot listen on port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def binary() -> str | None:
    return shutil.which("freeradius") or shutil.which("radiusd")


def raddb(
    tmp: Path,
    *,
    port: int,
    certificates: dict[str, Path],
    bridge: tuple[str, int] | None = None,
    inner: str | None = None,
    resumption: bool = False,
    secret: str = "access-point-secret",
) -> Path:
    """The configuration directory: Debian's, our sites only, our eap, proxy.conf and
    clients.conf. `certificates`: ca, cert, key. `bridge`: the bridge's RADIUS address (the
    home server). `inner`: a replacement inner server (its text) instead of the proxying one.
    `resumption`: FreeRADIUS's TLS session cache on (TTLS resumes). `secret`: the access
    points' (clients.conf)."""
    conf = tmp / "raddb"
    shutil.copytree(DEBIAN, conf, symlinks=True)
    for link in (conf / "sites-enabled").iterdir():
        link.unlink()
    for sub in ("mods-available/eap", "proxy.conf", "clients.conf"):
        shutil.copy(SAMPLE / sub, conf / sub)
    for site in ("patron-bridge", "patron-bridge-inner"):
        text = (SAMPLE / "sites-available" / site).read_text()
        if site == "patron-bridge":
            text = text.replace("ipaddr = *", "ipaddr = 127.0.0.1").replace(
                "port = 1812", f"port = {port}"
            )
        elif inner is not None:
            text = inner
        (conf / "sites-available" / site).write_text(text)
        (conf / "sites-enabled" / site).symlink_to(f"../sites-available/{site}")
    clients = (conf / "clients.conf").read_text()
    (conf / "clients.conf").write_text(clients.replace("access-point-secret", secret))
    if bridge is not None:
        proxy = (conf / "proxy.conf").read_text()
        proxy = proxy.replace("ipaddr = 127.0.0.1", f"ipaddr = {bridge[0]}")
        (conf / "proxy.conf").write_text(proxy.replace("port = 18120", f"port = {bridge[1]}"))
    if resumption:  # FreeRADIUS 3.2 caches sessions on disk only, under a name
        eap = (conf / "mods-available" / "eap").read_text()
        on = (
            'cache {\n\t\t\tenable = yes\n\t\t\tlifetime = 1\n\t\t\tname = "EAP module"'
            f'\n\t\t\tpersist_dir = "{tmp}/tlscache"'
        )
        eap = eap.replace("cache {\n\t\t\tenable = no", on)
        (conf / "mods-available" / "eap").write_text(eap)
    certs = conf / "certs" / "patron-bridge"
    certs.mkdir(parents=True)
    for name, target in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server-key.pem")):
        shutil.copy(certificates[name], certs / target)
    main = (conf / "radiusd.conf").read_text()
    for old, new in (
        ("raddbdir = /etc/freeradius/3.0", f"raddbdir = {conf}"),
        ("logdir = /var/log/freeradius", f"logdir = {tmp}/log"),
        ("run_dir = ${localstatedir}/run/${name}", f"run_dir = {tmp}/run"),
        ("\tuser = freerad\n", "\n"),
        ("\tgroup = freerad\n", "\n"),
        ("\tauth = no\n", "\tauth = yes\n"),  # one line per authentication, as the bridge audits
    ):
        assert old in main, old
        main = main.replace(old, new)
    (conf / "radiusd.conf").write_text(main)
    for sub in ("log", "run", "tlscache"):
        (tmp / sub).mkdir(exist_ok=True)
    return conf


@contextlib.contextmanager
def running(conf: Path, *, debug: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """FreeRADIUS in the foreground (`-X`: its debug output, for a test that reads it)."""
    path = binary()
    assert path is not None
    log = (conf.parent / "freeradius.out").open("ab")
    args = [path, "-X" if debug else "-f", "-d", str(conf)]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"freeradius exited: {(conf.parent / 'freeradius.out').read_text()}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_answering(address: tuple[str, int], secret: bytes, deadline: float = 30.0) -> None:
    """Ready once a Status-Server is answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            probe = rp.encode_request(rp.STATUS_SERVER, 1, os.urandom(16), [], secret)
            sock.sendto(probe, address)
            try:
                sock.recvfrom(4096)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"no answer from {address}")
