"""ILS fixtures for the SIP2 connector: real SIP2 servers on loopback, and one that misbehaves
on purpose.

- `Pysip2Ils`: a SIP2 server that is not ours (pysip2, from PyPI) as a separate process.
- `daemon_ils`: the bridge's own daemon, its `[sip2]` front end over the SQLite demo store.
- `ScriptedIls`: a tiny in-process SIP2 server built on the bridge's codec for the edge cases
  no real server produces on demand (blank CQ, closing mid-request, never answering), counting
  what it receives.

Readiness is always an event (a line on stdout, a bound socket), never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from ssl import SSLContext
from typing import Any

from bridge.core.store import StoreServices
from bridge.sip2.codec import Framer, Message, build, decode, encode, sip_date

__all__ = ["build"]
from plugins.sip2 import PLUGIN
from plugins.sip2.plugin import Sip2Store
from plugins.sip2.settings import Sip2StoreSettings
from tests import harness
from tests.plugins.sip2 import pysip2_ils

ILS_ACCOUNT = "ilsbridge"
ILS_ACCOUNT_PASSWORD = "ils-account-pw"


def settings(host: str, port: int, **over: Any) -> Sip2StoreSettings:
    base: dict[str, Any] = {
        "host": host,
        "port": port,
        "login": pysip2_ils.ILS_LOGIN,
        "password": pysip2_ils.ILS_PASSWORD,
        "location": "bridge",
        "institution": pysip2_ils.INSTITUTION,
        "request_timeout": 10.0,
        "keepalive": 0.0,
    }
    base.update(over)
    return Sip2StoreSettings(**base)


async def open_store(s: Sip2StoreSettings) -> Sip2Store:
    store = await PLUGIN.open(s, StoreServices(hasher=None, base_dir="."))
    assert isinstance(store, Sip2Store)
    return store


class Pysip2Ils:
    """pysip2's server in its own process; `kill()` and `start()` again on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "pysip2-ils.log"
        harness.LOG_FILES.append(self.log)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Pysip2Ils:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.plugins.sip2.pysip2_ils", str(self.port)],
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=harness.ROOT,
                env=dict(os.environ),
            )
        event = self.next_event(timeout=30)
        assert event.get("event") == "ready", event
        self.port = int(event["port"])
        return self

    def next_event(self, timeout: float = 30) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError("pysip2 ILS said nothing")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"pysip2 ILS exited: {self.log.read_text()[-2000:]}")
        event: dict[str, Any] = json.loads(line)
        return event

    async def wait_event(self, name: str) -> None:
        event = await asyncio.to_thread(self.next_event)
        assert event.get("event") == name, event

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


def daemon_ils(tmp: Path) -> harness.Daemon:
    """The bridge's own daemon as the ILS: SQLite demo patrons behind its SIP2 front end."""
    tmp.mkdir(parents=True, exist_ok=True)
    return harness.Daemon(
        tmp,
        f"""
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "{ILS_ACCOUNT}"
password = "{ILS_ACCOUNT_PASSWORD}"
institution = "MAIN"
""",
    )


Behaviour = Callable[[Message, int], "Message | str | None"]
"""Given a 63 and how many 63s came before it on any connection: a reply, "close" (drop the
connection without answering), "hang" (never answer) or None (the default 64)."""


class ScriptedIls:
    """An in-process SIP2 server on the bridge's codec; `behaviour` decides each 63's fate."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.patron_requests = 0
        self.connections = 0
        self.logins = 0
        self.status_requests = 0
        self.status_seen = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.hanging = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0, ssl: SSLContext | None = None) -> ScriptedIls:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        framer = Framer()
        try:
            while data := await reader.read(4096):
                for frame in framer.feed(data):
                    request = decode(frame)
                    reply = self._answer(request)
                    if reply == "close":
                        writer.close()
                        return
                    if reply == "hang":
                        self.hanging.set()
                        await asyncio.Event().wait()
                    assert isinstance(reply, Message)
                    writer.write(
                        encode(reply, sequence=request.sequence, checksum=request.checksummed)
                    )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, request: Message) -> Message | str:
        date = sip_date(0)
        if request.code == "93":
            self.logins += 1
            return build("94", {"ok": "1"})
        if request.code == "99":
            self.status_requests += 1
            self.status_seen.set()
            fixed = {
                "online_status": "Y",
                "date_time_sync": date,
                "protocol_version": "2.00",
                "timeout_period": "030",
                "retries_allowed": "003",
            }
            return build("98", fixed, [("AO", "ILS"), ("BX", "YNNNYYYYYNNNNNNN")])
        assert request.code == "63", request.code
        count = self.patron_requests
        self.patron_requests += 1
        chosen = self.behaviour(request, count)
        if chosen is None:
            return patron_reply(request, [("BL", "Y"), ("CQ", "Y")])
        return chosen


def patron_reply(request: Message, fields: list[tuple[str, str]], status: str = "") -> Message:
    fixed = {"patron_status": status or " " * 14, "language": "000", "transaction_date": ""}
    fixed.update({name: "0000" for name in ("hold_items_count", "overdue_items_count")})
    base = [("AO", "ILS"), ("AA", request.get("AA")), ("AE", "Scripted, Patron")]
    return build("64", fixed, base + fields)
