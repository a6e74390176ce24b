"""One request as the pages see it: language, cookie, session, CSRF token, and rendering.

Every response leaves through `Visit.finish`, which sets the session cookie (HttpOnly,
SameSite=Lax, Secure over HTTPS, `__Host-` prefixed then) and the language cookie. A visitor
without a plausible cookie gets a fresh random one, which their forms' CSRF tokens are bound to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bridge.core.pin import PolicyResult
from bridge.portal import answers, i18n
from bridge.portal.i18n import Translator
from bridge.portal.sessions import Session, new_id, plausible_id
from bridge.portal.settings import Language
from bridge.portal.state import Portal
from bridge.portal.visit_parts import lang_links, pin_length, read_form, set_lang_cookie


def cookie_name(portal: Portal) -> str:
    return ("__Host-" if portal.settings.secure else "") + portal.cookie


@dataclass(slots=True)
class Visit:
    portal: Portal
    request: Request
    lang: Language
    t: Translator
    cookie: str
    session: Session | None
    _set_cookie: bool = False
    _set_lang: bool = False

    @classmethod
    def of(cls, portal: Portal, request: Request) -> Visit:
        query_lang = request.query_params.get("lang")
        lang = i18n.choose(
            query_lang,
            request.cookies.get(i18n.LANG_COOKIE),
            request.headers.get("accept-language"),
            portal.settings.default_language,
        )
        raw = request.cookies.get(cookie_name(portal))
        fresh = not plausible_id(raw)
        cookie = new_id() if fresh or raw is None else raw
        session = None if fresh else portal.sessions.get(cookie)
        visit = cls(portal, request, lang, portal.translator(lang), cookie, session)
        visit._set_cookie = fresh
        visit._set_lang = i18n.as_language(query_lang) is not None
        return visit

    @property
    def source(self) -> str:
        client = self.request.client
        return client.host if client is not None else "unknown"

    @property
    def csrf(self) -> str:
        return self.portal.sessions.csrf_token(self.cookie)

    async def form(self) -> dict[str, str] | None:
        """The posted fields, or None when the CSRF token is missing or wrong."""
        return await read_form(self.request, self.portal.sessions, self.cookie, max_fields=10)

    # -- session changes --------------------------------------------------------------------
    def sign_in(self, barcode: str) -> None:
        """A new id on every sign-in (an id planted before login is worthless)."""
        self.portal.sessions.end(self.cookie)
        self.cookie = self.portal.sessions.create(barcode)
        self.session = self.portal.sessions.get(self.cookie)
        self._set_cookie = True

    def sign_out(self) -> None:
        self.portal.sessions.end(self.cookie)
        self.cookie = new_id()
        self.session = None
        self._set_cookie = True

    # -- responses --------------------------------------------------------------------------
    def lang_links(self) -> list[tuple[Language, str]]:
        return lang_links(self.request, self.lang)

    def pin_length(self) -> str:
        return pin_length(self.portal.authenticator.pin_policy)

    def policy_text(self, policy: PolicyResult) -> str:
        return self.t(answers.policy_message(policy), length=self.pin_length())

    def render(self, template: str, *, status: int = 200, **context: Any) -> Response:
        settings = self.portal.settings
        page = self.portal.env.get_template(template).render(
            t=self.t,
            lang=self.lang,
            lang_links=self.lang_links(),
            csrf=self.csrf,
            library=settings.library_name,
            logo=self.portal.logo is not None,
            logo_alt=settings.logo_alt or settings.library_name,
            help_links=[h for h in settings.help_links if h.lang in (None, self.lang)],
            signed_in=self.session is not None,
            pin_length=self.pin_length(),
            **context,
        )
        return self.finish(HTMLResponse(page, status_code=status))

    def redirect(self, path: str) -> Response:
        """303 to a path of ours (relative: never built from the Host header)."""
        return self.finish(RedirectResponse(path, status_code=303))

    def finish(self, response: Response) -> Response:
        secure = self.portal.settings.secure
        if self._set_cookie:
            response.set_cookie(
                cookie_name(self.portal),
                self.cookie,
                httponly=True,
                secure=secure,
                samesite="lax",
                path="/",
            )
        if self._set_lang:
            set_lang_cookie(response, self.lang, secure)
        return response
