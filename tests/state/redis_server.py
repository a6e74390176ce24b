"""Redis for tests: the machine's shared server (unique key prefix per test, deleted after), or
a private `redis-server` on a free loopback port that a test may stop and start again (never
the shared one: other engineers' tests use it)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from tests.conftest import require_server, require_tool

HOST, PORT = "127.0.0.1", 6379


def unique_prefix() -> str:
    return f"pbtest:{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def shared_prefix() -> Iterator[tuple[str, str]]:
    """(url, prefix) on the machine's Redis; every key under the prefix deleted afterwards."""
    require_server("Redis", HOST, PORT)
    url, prefix = f"redis://{HOST}:{PORT}/0", unique_prefix()
    try:
        yield url, prefix
    finally:
        delete_prefix(url, prefix)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own on 127.0.0.1:`port`, no persistence; stop/start keep
    the port (the bridges reconnect to the same URL)."""

    def __init__(self, directory: Path, *extra: str, tls: bool = False) -> None:
        """`extra`: more redis-server options; `tls`: serve TLS only (cert.pem/key.pem in
        `directory`, self-signed for 127.0.0.1)."""
        self.binary = require_tool("redis-server")
        self.directory = directory
        self.port = free_port()
        self.extra = list(extra)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _ports(self) -> list[str]:
        if not self.tls:
            return ["--port", str(self.port)]
        cert, key = self.directory / "cert.pem", self.directory / "key.pem"
        if not cert.exists():
            from bridge.tls import generate_self_signed

            generate_self_signed(cert, key, ["127.0.0.1", "localhost"])
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-auth-clients",
            "no",
        ]

    def _readies(self) -> int:
        path = self.directory / "redis.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text.count("Ready to accept connections")

    def start(self) -> PrivateRedis:
        before = self._readies()
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                *self._ports(),
                *self.extra,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while True:  # readiness by its log line, spaced by a short pause, never a fixed sleep
            if self._readies() > before:
                return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivateSentinelSet:
    """A primary, one replica and `count` sentinels (failover at `quorum` of them) of the
    test's own, each a real redis-server on a free loopback port in its own directory: enough
    for a real failover."""

    SERVICE = "pb-test"

    def __init__(
        self,
        directory: Path,
        count: int = 1,
        quorum: int = 1,
        *,
        tls: bool = False,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        """`tls`: every server and sentinel speaks TLS only, each with the same self-signed
        certificate for 127.0.0.1 (`ca_file`), replication and sentinel links included.
        `password`: the data nodes' requirepass (and replication's); `sentinel_password`: the
        sentinels' own requirepass."""
        for name in ("primary", "replica", *(f"sentinel-{i}" for i in range(count))):
            (directory / name).mkdir()
        self.directory = directory
        self.quorum = quorum
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        self.ca_file = directory / "cert.pem"
        if tls:
            from bridge.tls import generate_self_signed

            generate_self_signed(self.ca_file, directory / "key.pem", ["127.0.0.1", "localhost"])
            for name in ("primary", "replica"):  # PrivateRedis uses what it finds there
                shutil.copy(self.ca_file, directory / name / "cert.pem")
                shutil.copy(directory / "key.pem", directory / name / "key.pem")
        links = ["--tls-replication", "yes", "--tls-ca-cert-file", str(self.ca_file)] if tls else []
        if password:  # both: after a failover the old primary comes back as a replica
            links += ["--requirepass", password, "--masterauth", password]
        self.primary = PrivateRedis(directory / "primary", *links, tls=tls)
        self.replica = PrivateRedis(
            directory / "replica",
            *("--replicaof", "127.0.0.1", str(self.primary.port)),
            *links,
            tls=tls,
        )
        self.sentinel_ports = [free_port() for _ in range(count)]
        self.sentinels: list[subprocess.Popen[bytes] | None] = [None] * count

    @property
    def sentinel_port(self) -> int:
        return self.sentinel_ports[0]

    def sentinel_log(self, index: int = 0) -> str:
        path = self.directory / f"sentinel-{index}" / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PrivateSentinelSet:
        self.primary.start()
        self.replica.start()
        for i, port in enumerate(self.sentinel_ports):
            home = self.directory / f"sentinel-{i}"
            conf = home / "sentinel.conf"  # each sentinel rewrites its own
            listen = f"port {port}\n"
            if self.tls:
                key = self.directory / "key.pem"
                listen = (
                    f"port 0\ntls-port {port}\ntls-cert-file {self.ca_file}\n"
                    f"tls-key-file {key}\ntls-ca-cert-file {self.ca_file}\n"
                    "tls-auth-clients no\ntls-replication yes\n"
                )
            if self.password:
                listen += f"sentinel auth-pass {self.SERVICE} {self.password}\n"
            if self.sentinel_password:  # their own, and what they ask of each other
                listen += f"requirepass {self.sentinel_password}\n"
                listen += f"sentinel sentinel-pass {self.sentinel_password}\n"
            conf.write_text(
                f"{listen}bind 127.0.0.1\ndir {home}\nlogfile {home / 'sentinel.log'}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
                f"sentinel failover-timeout {self.SERVICE} 5000\n"
            )
            self.sentinels[i] = subprocess.Popen(
                [self.primary.binary, str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        others = len(self.sentinel_ports) - 1
        for i in range(len(self.sentinel_ports)):  # each knows the replica and the others
            self._until(lambda i=i: "+slave slave" in self.sentinel_log(i), "no replica seen")
            self._until(
                lambda i=i: self.sentinel_log(i).count("+sentinel sentinel") >= others,
                "the sentinels did not find each other",
            )
        self._until(self.replica_in_sync, "the replica did not sync")
        return self

    def kill_sentinel(self, index: int) -> None:
        proc = self.sentinels[index]
        assert proc is not None
        proc.kill()
        proc.wait(timeout=20)
        self.sentinels[index] = None

    def _client(self, port: int, timeout: float) -> redis.Redis:
        sentinel = port in self.sentinel_ports
        password = self.sentinel_password if sentinel else self.password
        if not self.tls:
            return redis.Redis(port=port, socket_timeout=timeout, password=password)
        return redis.Redis(
            port=port,
            socket_timeout=timeout,
            password=password,
            ssl=True,
            ssl_ca_certs=str(self.ca_file),
        )

    def replica_in_sync(self) -> bool:
        client = self._client(self.replica.port, 2)
        try:
            return bool(client.info("replication").get("master_link_status") == "up")
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _until(self, condition: Any, what: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(what)
            time.sleep(0.05)

    def replicated(self) -> int:
        """WAIT on the primary until the replica has every write so far: the replicas that
        acknowledged (1 here)."""
        client = self._client(self.primary.port, 10)
        try:
            return int(client.execute_command("WAIT", 1, 5000))
        finally:
            client.close()

    def kill_primary(self) -> None:
        assert self.primary.proc is not None
        self.primary.proc.kill()
        self.primary.proc.wait(timeout=20)
        self.primary.proc = None

    def named_primary(self, index: int = 0) -> tuple[str, int]:
        client = self._client(self.sentinel_ports[index], 2)
        try:
            host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            return host.decode(), int(port)
        finally:
            client.close()

    def stop(self) -> None:
        for i, proc in enumerate(self.sentinels):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)
                self.sentinels[i] = None
        self.replica.stop()
        self.primary.stop()

    def __enter__(self) -> PrivateSentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
