"""An in-process staff desk over a real core and SQLite store, with accounts of every role."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from bridge.app import Core, open_core, throttle_rules
from bridge.config import Config
from bridge.core.secret import Secret
from bridge.core.throttle import Throttle
from bridge.portal.sessions import SessionStore
from bridge.staff.accounts import AccountFile
from bridge.staff.history import DecisionHistory
from bridge.staff.roles import Role
from bridge.staff.state import Desk, reset_links
from bridge.staff.web import create_app
from tests.portal.support import PORTAL_SECTION, Clock, FakeMailer, RecordingAudit, make_config

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
# What a page may hold that is full of digits and is not a PIN: tokens, dates, times.
_NOISE = re.compile(r"[0-9a-f]{32,}|[A-Za-z0-9_=-]{60,}|\d{4}-\d\d-\d\d( \d\d:\d\d(:\d\d)?)?")


def shows_pin(text: str, pin: str, *cards: str) -> bool:
    """Whether `pin` is on a page, apart from tokens, dates, times and these card numbers
    (a random 4-digit PIN can be part of any of them by chance)."""
    text = _NOISE.sub(" ", text)
    for card in cards:
        text = text.replace(card, " ")
    return pin in text


PASSWORD = "correct horse battery"  # a test password, not a PIN
STAFF_SECTION = """
[staff]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8081"
library_name = "Riverside Public Library"
branches = ["Central", "Eastside"]
minor_categories = ["JUVENILE"]
"""
ACCOUNTS = {"dana": Role.DESK, "sam": Role.SUPERVISOR, "ada": Role.ADMIN}


@dataclass
class StaffEnv:
    core: Core
    desk: Desk
    client: TestClient
    mailer: FakeMailer
    clock: Clock
    audit: RecordingAudit

    def csrf(self, path: str = "/login") -> str:
        page = self.client.get(path)
        found = CSRF.search(page.text)
        assert found, page.text
        return found.group(1)

    def login(self, name: str, password: str = PASSWORD, branch: str = "0") -> Any:
        return self.client.post(
            "/login",
            data={"csrf": self.csrf(), "name": name, "password": password, "branch": branch},
        )

    def post(self, path: str, **fields: str) -> Any:
        return self.client.post(path, data={"csrf": self.csrf("/desk"), **fields})

    def drain(self) -> None:
        portal = self.client.portal
        assert portal is not None

        portal.call(self.desk.drain)


def staff_config(tmp: Path, extra: str = "") -> Config:
    return make_config(tmp, PORTAL_SECTION + STAFF_SECTION + extra)


def open_staff_env(tmp: Path, extra: str = "", throttle: Any = None) -> Iterator[StaffEnv]:
    """`throttle`: the staff sign-in guard (default: a `Throttle` of the desk's own)."""
    config = staff_config(tmp, extra)
    assert config.staff is not None
    core = asyncio.run(open_core(config))
    audit = RecordingAudit()
    core.authenticator.audit = audit
    clock = Clock()
    mailer = FakeMailer()
    state = tmp / "staff.db"
    accounts = AccountFile(state)
    for name, role in ACCOUNTS.items():
        accounts.put(name, role, core.hasher.hash_sync(Secret(PASSWORD)))
    history = DecisionHistory(state, b"k" * 32)
    audit.taps.append(history.tap)
    desk = Desk(
        settings=config.staff,
        authenticator=core.authenticator,
        accounts=accounts,
        hasher=core.hasher,
        history=history,
        sessions=SessionStore(clock, idle_seconds=600, max_seconds=36000),
        throttle=throttle or Throttle(throttle_rules(config)),
        mailer=mailer,
        sender="pins@library.example.org",
        mail_enabled=True,
        fines_limit=config.client_policy(None).fines_limit,
        links=reset_links(core.authenticator, "http://127.0.0.1:8080", 30),
        clock=clock,
        base_dir=tmp,
    )
    try:
        with TestClient(create_app(desk), base_url="http://127.0.0.1:8081") as client:
            yield StaffEnv(core, desk, client, mailer, clock, audit)
    finally:
        asyncio.run(core.aclose())
