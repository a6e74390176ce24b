"""Real database servers for store tests: throwaway databases, and a TCP proxy that can stall or
drop the link so "database down" and "database slow" are tested for real.

Every database gets a unique name and is dropped afterwards, so parallel runs and other
engineers' tests on the same servers never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import psycopg
import pymysql

from tests.conftest import require_server

PG_HOST, PG_PORT = "127.0.0.1", 5432
MY_HOST, MY_PORT = "127.0.0.1", 3306


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def pg_database(prefix: str = "pb_test") -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped (with its sessions) afterwards."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    name = unique(prefix)
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_admin(dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    """A superuser connection into a test database (to build fixtures and to break things)."""
    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname, autocommit=True
    )


@contextlib.contextmanager
def mariadb_database(prefix: str = "pb_test") -> Iterator[str]:
    """A new, empty MariaDB database; dropped afterwards."""
    require_server("MariaDB", MY_HOST, MY_PORT)
    name = unique(prefix)
    admin = mariadb_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def mariadb_admin(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=MY_HOST, port=MY_PORT, user="root", database=database, autocommit=True
    )


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0
) -> None:
    """Wait for a condition the test can observe (a backend waiting on a lock, ...).

    Readiness by observation, never by a fixed sleep: the short pause only spaces the checks.
    """
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Proxy:
    """A TCP relay in front of a real server that the test can stall or take down.

    - `stall()`: keep every connection open but stop relaying (a hung network or server);
    - `down()`: drop every connection and refuse new ones (server stopped);
    - `up()`: relay again (on the same port).
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def stall(self) -> None:
        self._flowing.clear()

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def up(self) -> None:
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        self._flowing.set()
        await self.down()
