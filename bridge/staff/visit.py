"""One request to the desk: language, cookie, the signed-in staff member, CSRF, rendering.

The portal's `SessionStore` holds the sessions (a random id in an HttpOnly cookie, CSRF tokens
bound to it, a new id on every sign-in, idle and absolute time-outs). The session's key is
`name|branch-index`; the account is read again on every request, so a removed or demoted
account loses its access at its next click.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bridge.core.pin import PolicyResult
from bridge.portal import answers, i18n
from bridge.portal.i18n import Translator
from bridge.portal.sessions import new_id, plausible_id
from bridge.portal.settings import Language
from bridge.portal.visit_parts import lang_links, pin_length, read_form, set_lang_cookie
from bridge.staff.accounts import Account
from bridge.staff.roles import Role, parse_role
from bridge.staff.state import Desk


def cookie_name(desk: Desk) -> str:
    return "__Host-staff" if desk.settings.secure else "staff"


@dataclass(frozen=True, slots=True)
class Staff:
    account: Account
    branch: str

    @property
    def name(self) -> str:
        return self.account.name


def when(timestamp: float) -> str:
    """A history time in the daemon's local time zone, to the second."""
    return dt.datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")


#: Every staff session key starts so: with shared state the PIN pages' sessions (keyed by card
#: number, which never has a space) live in the same store, and neither is the other.
STAFF_KEY = "staff "


def session_key(name: str, branch: int, directory_role: Role | None = None) -> str:
    """`staff name|branch`; a directory sign-in adds `|role` (the directory was asked at
    sign-in, so a group change there takes effect at the next sign-in)."""
    base = f"{STAFF_KEY}{name}|{branch}"
    return base if directory_role is None else f"{base}|{directory_role.value}"


@dataclass(slots=True)
class StaffVisit:
    desk: Desk
    request: Request
    lang: Language
    t: Translator
    cookie: str
    staff: Staff | None
    _set_cookie: bool = False
    _set_lang: bool = False

    @classmethod
    async def of(cls, desk: Desk, request: Request) -> StaffVisit:
        query_lang = request.query_params.get("lang")
        lang = i18n.choose(
            query_lang,
            request.cookies.get(i18n.LANG_COOKIE),
            request.headers.get("accept-language"),
            desk.settings.default_language,
        )
        raw = request.cookies.get(cookie_name(desk))
        fresh = not plausible_id(raw)
        cookie = new_id() if fresh or raw is None else raw
        session = None if fresh else desk.sessions.get(cookie)
        staff = None
        if session is not None:
            staff = await cls._staff(desk, session.barcode)
            if staff is None:
                desk.sessions.end(cookie)
        visit = cls(desk, request, lang, desk.translator(lang), cookie, staff)
        visit._set_cookie = fresh
        visit._set_lang = i18n.as_language(query_lang) is not None
        return visit

    @staticmethod
    async def _staff(desk: Desk, key: str) -> Staff | None:
        if not key.startswith(STAFF_KEY):
            return None  # a patron's session from the PIN pages, in a shared store
        name, index, *rest = [*key[len(STAFF_KEY) :].split("|"), ""][:3]
        branches = desk.settings.branches
        if not index.isdigit() or int(index) >= len(branches):
            return None
        branch = branches[int(index)]
        if desk.settings.auth == "ldap":
            role = parse_role(rest[0])
            return None if role is None else Staff(Account(name, role, ""), branch)
        if rest[0]:
            return None
        account = await asyncio.to_thread(desk.accounts.get, name)
        if account is None or account.disabled:
            return None
        return Staff(account, branch)

    @property
    def source(self) -> str:
        client = self.request.client
        return client.host if client is not None else "unknown"

    @property
    def csrf(self) -> str:
        return self.desk.sessions.csrf_token(self.cookie)

    async def form(self) -> dict[str, str] | None:
        """The posted fields, or None when the CSRF token is missing or wrong."""
        return await read_form(self.request, self.desk.sessions, self.cookie, max_fields=12)

    def sign_in(self, key: str) -> None:
        self.desk.sessions.end(self.cookie)
        self.cookie = self.desk.sessions.create(key)
        self._set_cookie = True

    def sign_out(self) -> None:
        self.desk.sessions.end(self.cookie)
        self.cookie = new_id()
        self.staff = None
        self._set_cookie = True

    def lang_links(self) -> list[tuple[Language, str]]:
        return lang_links(self.request, self.lang)

    def pin_length(self) -> str:
        return pin_length(self.desk.authenticator.pin_policy)

    def policy_text(self, policy: PolicyResult) -> str:
        return self.t(answers.policy_message(policy), length=self.pin_length())

    def render(self, template: str, *, status: int = 200, **context: Any) -> Response:
        page = self.desk.env.get_template(template).render(
            t=self.t,
            lang=self.lang,
            lang_links=self.lang_links(),
            csrf=self.csrf,
            library=self.desk.settings.library_name,
            staff=self.staff,
            pin_length=self.pin_length(),
            when=when,
            **context,
        )
        return self.finish(HTMLResponse(page, status_code=status))

    def redirect(self, path: str) -> Response:
        return self.finish(RedirectResponse(path, status_code=303))

    def finish(self, response: Response) -> Response:
        secure = self.desk.settings.secure
        if self._set_cookie:
            response.set_cookie(
                cookie_name(self.desk),
                self.cookie,
                httponly=True,
                secure=secure,
                samesite="strict",
                path="/",
            )
        if self._set_lang:
            set_lang_cookie(response, self.lang, secure)
        return response
