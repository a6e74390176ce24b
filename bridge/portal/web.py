"""The ASGI app: routes, static files, and the headers every response carries.

Security headers are set by a small pure-ASGI middleware so no route can forget them: a CSP
that allows only our own stylesheet and images and no scripts at all, no framing, no referrer
(the reset page's URL holds its token), no caching of pages that show a patron's details.
Request bodies are capped before any form parsing.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.portal import pages, reset_pages
from bridge.portal.state import Portal

MAX_BODY = 16 * 1024

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if hsts:
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY:
            await PlainTextResponse("Request too large", status_code=413)(scope, receive, send)
            return
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise TooLarge
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, capped_receive, with_headers)
        except TooLarge:
            await PlainTextResponse("Request too large", status_code=413)(scope, receive, send)


class TooLarge(Exception):
    """A chunked body grew past MAX_BODY."""


async def logo(request: Request) -> Response:
    portal: Portal = request.app.state.portal
    if portal.logo is None:
        return PlainTextResponse("Not Found", status_code=404)
    return Response(portal.logo.data, media_type=portal.logo.media_type)


def create_app(portal: Portal) -> ASGIApp:
    app = Starlette(
        routes=[
            Route("/", pages.home),
            Route("/login", pages.login, methods=["GET", "POST"]),
            Route("/account", pages.account),
            Route("/pin", pages.modify_pin, methods=["GET", "POST"]),
            Route("/pin/first", pages.first_pin, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/forgot", reset_pages.forgot, methods=["GET", "POST"]),
            Route("/reset", reset_pages.reset, methods=["GET", "POST"]),
            Route("/logo", logo),
            Mount("/static", StaticFiles(packages=[("bridge.portal", "static")]), name="static"),
        ]
    )
    app.state.portal = portal
    return SecurityHeaders(app, hsts=portal.settings.secure)
