"""What a portal visit and a staff-desk visit do alike: form reading, language links, cookies.

The two web front ends differ in who is signed in and which cookie policy guards the session
(Lax for patrons arriving from a library's site, Strict for the desk), but read a posted form,
offer the other languages, state the PIN length and keep the language cookie the same way;
those pieces live here once so the two cannot drift apart.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from bridge.core.pin import PinPolicy
from bridge.portal import i18n
from bridge.portal.sessions import SessionStore
from bridge.portal.settings import LANGUAGES, Language

MAX_FIELD = 256  # longer than any barcode, PIN or token the pages accept


async def read_form(
    request: Request, sessions: SessionStore, cookie: str, max_fields: int
) -> dict[str, str] | None:
    """The posted fields, each cut to `MAX_FIELD`, or None when the CSRF token is wrong."""
    data = await request.form(max_files=0, max_fields=max_fields, max_part_size=4096)
    fields = {k: v[:MAX_FIELD] for k, v in data.items() if isinstance(v, str)}
    if not sessions.csrf_ok(cookie, fields.get("csrf")):
        return None
    return fields


def lang_links(request: Request, current: Language) -> list[tuple[Language, str]]:
    """The switcher's links: this page's query with another `lang`."""
    params = {k: v for k, v in request.query_params.items() if k != "lang"}
    return [
        (lang, "?" + urlencode({**params, "lang": lang})) for lang in LANGUAGES if lang != current
    ]


def pin_length(policy: PinPolicy) -> str:
    """ "4" or "4–8", as the pages tell a patron what a PIN may be."""
    if policy.min_length == policy.max_length:
        return str(policy.min_length)
    return f"{policy.min_length}–{policy.max_length}"


def set_lang_cookie(response: Response, lang: str, secure: bool) -> None:
    """Remember the chosen language for a year (Lax: it guards nothing)."""
    response.set_cookie(
        i18n.LANG_COOKIE,
        lang,
        max_age=365 * 86400,
        httponly=True,
        secure=secure,
        samesite="lax",
        path="/",
    )
