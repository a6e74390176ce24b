"""The desk's ASGI app: its routes behind the portal's security-header middleware (CSP with no
scripts, no framing, no referrer, no caching, capped bodies)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from bridge.portal.web import SecurityHeaders
from bridge.staff import manage, pages, reset_modes
from bridge.staff.state import Desk


def create_app(desk: Desk) -> ASGIApp:
    card = "/card/{barcode}"
    app = Starlette(
        routes=[
            Route("/", pages.home),
            Route("/login", pages.login, methods=["GET", "POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/desk", pages.desk_page),
            Route("/new", pages.new_card, methods=["GET", "POST"]),
            Route(card, pages.card),
            Route(card + "/pin", pages.reset_pin, methods=["POST"]),
            Route(card + "/onetime", reset_modes.issue_one_time, methods=["POST"]),
            Route(card + "/handover", reset_modes.hand_over, methods=["POST"]),
            Route("/handover", reset_modes.patron_pin, methods=["POST"]),
            Route("/staff", manage.accounts_page, methods=["GET", "POST"]),
            Route("/staff/{name}", manage.account_page),
            Route("/staff/{name}/{what}", manage.change_account, methods=["POST"]),
            Route(card + "/unlock", pages.clear_lock, methods=["POST"]),
            Route(card + "/block", pages.block, methods=["POST"]),
            Route(card + "/unblock", pages.unblock, methods=["POST"]),
            Route(card + "/link", pages.send_link, methods=["POST"]),
            Mount(
                "/static",
                StaticFiles(packages=[("bridge.portal", "static"), ("bridge.staff", "static")]),
                name="static",
            ),
        ]
    )
    app.state.desk = desk
    return SecurityHeaders(app, hsts=desk.settings.secure)
