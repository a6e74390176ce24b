"""Shared test helpers for the portal: an in-process core, a fake mailer, a movable clock,
and a real aiosmtpd server (STARTTLS and AUTH when asked)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from starlette.testclient import TestClient

from bridge.app import Core, open_core
from bridge.config import Config, loads
from bridge.core.audit import Audit
from bridge.portal.state import Portal
from bridge.portal.web import create_app
from bridge.tls import generate_self_signed
from tests.harness import base_config

LINK = re.compile(r"(https?://\S+/reset\?token=[A-Za-z0-9_\-]+)")
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Clock:
    """A clock tests move by hand (never by sleeping)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def utc(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now, dt.UTC)


class RecordingAudit(Audit):
    """The real audit (lines still go to the checked log), plus a list to assert on."""

    def __init__(self) -> None:
        super().__init__("masked")
        self.events: list[dict[str, Any]] = []

    def event(self, event: str, *, barcode: str | None = None, **fields: Any) -> None:
        super().event(event, barcode=barcode, **fields)
        self.events.append({"event": event, "barcode": barcode, **fields})

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


class FakeMailer:
    """Collects messages; `wait(n)` blocks on a condition until n have arrived."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._cond = threading.Condition()

    async def send(self, message: EmailMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


PORTAL_SECTION = """
[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
library_name = "Riverside Public Library"
[[portal.help_links]]
label = "Library hours"
url = "https://library.example.org/hours"
[[portal.help_links]]
label = "Horario"
url = "https://library.example.org/horario"
lang = "es"

[smtp]
host = "127.0.0.1"
port = 2525
sender = "pins@library.example.org"
"""


def make_config(tmp: Path, extra: str = PORTAL_SECTION) -> Config:
    text = base_config(tmp, throttle='state = "memory"') + extra
    return loads(text, source=str(tmp / "bridge.toml"), base_dir=tmp)


@dataclass
class Env:
    """One in-process portal over a real core and SQLite store."""

    core: Core
    portal: Portal
    client: TestClient
    mailer: FakeMailer
    clock: Clock
    audit: RecordingAudit
    loop_tasks: list[Any] = field(default_factory=list)

    def csrf(self, path: str = "/login") -> str:
        page = self.client.get(path)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def drain(self) -> None:
        """Run the app's background tasks (reset lookups, mail) to completion."""
        portal = self.client.portal
        assert portal is not None
        portal.call(self.portal.drain)

    def login(self, barcode: str, pin: str) -> Any:
        return self.client.post(
            "/login", data={"csrf": self.csrf(), "barcode": barcode, "pin": pin}
        )


def open_env(tmp: Path, config: Config | None = None) -> Iterator[Env]:
    config = config or make_config(tmp)
    core = asyncio.run(open_core(config))
    audit = RecordingAudit()
    core.authenticator.audit = audit
    clock = Clock()
    mailer = FakeMailer()
    assert config.portal is not None
    portal = Portal.build(
        config.portal,
        core.authenticator,
        mailer,
        sender="pins@library.example.org",
        clock=clock,
        token_clock=clock.utc,
    )
    try:
        with TestClient(create_app(portal), base_url="http://127.0.0.1:8080") as client:
            yield Env(core, portal, client, mailer, clock, audit)
    finally:
        asyncio.run(core.aclose())


def body_of(message: Message) -> str:
    if isinstance(message, EmailMessage):
        part = message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Inbox:
    """aiosmtpd handler keeping every message; `wait(n)` blocks on a condition."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.logins: list[str] = []
        self._cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._cond:
            self.messages.append(message_from_bytes(envelope.content))
            self._cond.notify_all()
        return "250 OK"

    def wait(self, count: int, timeout: float = 30) -> list[Message]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


SMTP_USER = "bridge"
SMTP_PASSWORD = "smtp-test-password"


class SmtpServer:
    """A real SMTP server on loopback; with `tls_dir`, STARTTLS is required before AUTH."""

    def __init__(self, tls_dir: Path | None = None) -> None:
        import ssl

        self.inbox = Inbox()
        self.port = free_port()
        self.cert: Path | None = None
        kwargs: dict[str, Any] = {}
        if tls_dir is not None:
            self.cert, key = tls_dir / "smtp-cert.pem", tls_dir / "smtp-key.pem"
            generate_self_signed(self.cert, key, ["127.0.0.1"])
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            kwargs = {
                "tls_context": context,
                "require_starttls": True,
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": True,
            }
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == SMTP_USER.encode()
            and data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.inbox.logins.append(SMTP_USER)
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
