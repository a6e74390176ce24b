"""Server-side sessions for signed-in patrons, and the CSRF token every form carries.

The browser holds only a random 256-bit id in an HttpOnly cookie; the patron's barcode stays on
the server, so a stolen page or log line gives nothing to replay. Sessions end after an idle
time, after an absolute time, on logout, and whenever the core invalidates the card (a PIN
change, reset, block or lock ends every session of that patron: `end_patron`).

CSRF: the token of a form is an HMAC of the cookie value under a per-process key. Visitors who
are not signed in still get a random cookie, so the login, forgot-PIN and reset forms are
protected without keeping any state for them. Signing in swaps the cookie for a new id, so an
id planted before login (fixation) is worthless. The clock is passed in; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ID_BYTES = 32
MAX_ID_LENGTH = 64


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def plausible_id(value: str | None) -> bool:
    """A cookie value shaped like one of ours (anything else is replaced, never looked up)."""
    return (
        value is not None
        and 20 <= len(value) <= MAX_ID_LENGTH
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
    )


@dataclass(slots=True)
class Session:
    barcode: str
    created: float
    last_seen: float


class SessionStore:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle_seconds: float,
        max_seconds: float,
        max_sessions: int = 100_000,
        csrf_key: bytes | None = None,  # shared by every worker and host ([state]), or random
    ) -> None:
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # oldest use first
        self._csrf_key = csrf_key or secrets.token_bytes(32)

    def create(self, barcode: str) -> str:
        now = self.clock()
        self._sweep(now)
        sid = new_id()
        self._sessions[sid] = Session(barcode, now, now)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session for this cookie value (touching it), or None."""
        if sid is None:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self.clock()
        if self._expired(session, now):
            del self._sessions[sid]
            return None
        session.last_seen = now
        self._sessions.move_to_end(sid)
        return session

    def end(self, sid: str | None) -> None:
        if sid is not None:
            self._sessions.pop(sid, None)

    def end_patron(self, barcode: str) -> asyncio.Future[None] | None:
        """End every session of one patron (the core's on_invalidate hook). A shared session
        store returns its deletion still under way, for the core to wait for."""
        for sid in [sid for sid, s in self._sessions.items() if s.barcode == barcode]:
            del self._sessions[sid]
        return None

    def count_patron(self, barcode: str) -> int:
        return sum(1 for s in self._sessions.values() if s.barcode == barcode)

    def csrf_token(self, cookie_value: str) -> str:
        return hmac.new(
            self._csrf_key, b"csrf|" + cookie_value.encode(), hashlib.sha256
        ).hexdigest()

    def derived_key(self, label: str) -> bytes:
        """A 32-byte key for `label`, from the CSRF key: the same on every worker and host
        that share it (the staff desk seals its hand-over step with one)."""
        return hmac.new(self._csrf_key, b"key|" + label.encode(), hashlib.sha256).digest()

    def csrf_ok(self, cookie_value: str | None, submitted: str | None) -> bool:
        if not cookie_value or not submitted:
            return False
        # As bytes: compare_digest raises on a str with non-ASCII characters (a hostile form).
        return hmac.compare_digest(self.csrf_token(cookie_value).encode(), submitted.encode())

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return (
            now - session.last_seen > self.idle_seconds or now - session.created > self.max_seconds
        )

    def _sweep(self, now: float) -> None:
        """Drop idle sessions from the old end; the order is by last use, so stop at a live one."""
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if not self._expired(session, now):
                return
            del self._sessions[sid]
