"""Serve the OpenID Connect provider on its own listener, with the PIN pages' web pieces.

Its own listener (ideally its own host name in production, so the provider can be exposed to
vendors without exposing My Account; its cookie has its own name, so sharing a host name with
the PIN pages also works). Uvicorn is driven the way `bridge.portal.server` drives it (no signal
takeover, no access log: query strings carry codes and states). With shared `[state]` the single
sign-on sessions are read from and written to it around each request (`SharedSessions`), and
every worker binds the same port (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from bridge.config import ConfigError
from bridge.federation import consent, oidc
from bridge.federation.keys import KeyRing
from bridge.federation.provider import Provider
from bridge.federation.settings import OidcSettings
from bridge.federation.sso import SsoSessions
from bridge.federation.state import StateUnavailable, open_state
from bridge.federation.subjects import read_or_create_secret
from bridge.portal.mail import NoMailer
from bridge.portal.server import serve_guarded, share_sessions
from bridge.portal.settings import PortalSettings
from bridge.portal.shared_sessions import RecordingSessions, SharedSessions
from bridge.portal.state import Portal, read_logo
from bridge.portal.visit import cookie_name
from bridge.portal.web import SecurityHeaders, logo
from bridge.services import Services
from bridge.tls import listener_context

log = structlog.get_logger("bridge.federation")


@dataclass(slots=True)
class OidcListener:
    name: str
    addresses: list[str]
    provider: Provider
    server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task[None]
    idp: Any = None  # the SAML IdP, when [saml] is configured
    tls_context: ssl.SSLContext | None = None  # the PIN pages' pair; a reload loads it again

    def on_reload(self) -> None:
        """A reload refetches SAML metadata URLs and re-reads metadata files."""
        if self.idp is not None:
            self.idp.reload_requested()

    async def aclose(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.server.shutdown(sockets=[self.sock])
        await self.provider.aclose()
        if self.idp is not None:
            await self.idp.aclose()


def saml_routes() -> list[Route]:
    from bridge.federation import saml, saml_logout

    return [
        Route("/saml/metadata", saml.metadata),
        Route("/saml/sso/redirect", saml.sso),
        Route("/saml/sso/post", saml.sso, methods=["POST"]),
        Route("/saml/login", saml.login, methods=["GET", "POST"]),
        Route("/saml/slo/redirect", saml_logout.slo),
        Route("/saml/slo/post", saml_logout.slo, methods=["POST"]),
        Route("/saml/logout", saml_logout.everywhere),
    ]


def create_app(provider: Provider, idp: Any = None) -> ASGIApp:
    app = Starlette(
        routes=[
            *(saml_routes() if idp is not None else []),
            Route("/.well-known/openid-configuration", oidc.discovery),
            Route("/oidc/jwks", oidc.jwks),
            Route("/oidc/authorize", oidc.authorize),
            Route("/oidc/login", oidc.login, methods=["GET", "POST"]),
            Route("/oidc/consent", consent.answer, methods=["GET", "POST"]),
            Route("/oidc/token", oidc.token, methods=["POST"]),
            Route("/oidc/userinfo", oidc.userinfo, methods=["GET", "POST"]),
            Route("/oidc/logout", oidc.logout),
            Route("/logo", logo),
            Mount("/static", StaticFiles(packages=[("bridge.portal", "static")]), name="static"),
        ],
        exception_handlers={StateUnavailable: state_unavailable},
    )
    app.state.portal = provider.portal
    app.state.provider = provider
    app.state.saml = idp
    return SecurityHeaders(app, hsts=provider.portal.settings.secure)


async def state_unavailable(request: Request, exc: Exception) -> Response:
    """The shared state did not answer: nothing can be issued or checked without it."""
    log.error("oidc_state_unavailable", error=str(exc))
    return PlainTextResponse(
        "Sign-in is unavailable for a moment. Please try again shortly.\n",
        status_code=503,
        headers={"retry-after": "5"},
    )


def keep_seconds(settings: OidcSettings) -> float:
    """How long a retired key stays published: the longest life of a token it signed."""
    return max(settings.id_token_minutes, settings.access_token_minutes) * 60.0


def build_provider(settings: OidcSettings, services: Services) -> Provider:
    config = services.config
    for key, message in settings.problems():
        raise ConfigError(f"{config.source}: oidc.{key}: {message}")
    pages = config.portal or PortalSettings()
    # The sign-in pages take their look and languages from [portal]; cookies follow the issuer.
    look = msgspec.structs.replace(pages, base_url=settings.issuer, listen=settings.listen)
    try:
        logo_data = read_logo(config.path(pages.logo_file) if pages.logo_file else None)
        keys = KeyRing(config.path(settings.keys_file), keep_seconds(settings))
        secret = read_or_create_secret(config.path(settings.pairwise_key_file))
    except OSError as exc:
        raise ConfigError(f"{config.source}: oidc: {exc.filename}: {exc.strerror}") from None
    portal = Portal.build(
        look, services.authenticator, NoMailer(), sender="", logo=logo_data, mail_enabled=False
    )
    forgot = f"{config.portal.base_url}/forgot" if config.portal is not None else None
    state = open_state(config, services.authenticator.store, time.time)
    return Provider.build(settings, portal, keys, secret, config.policy, forgot, state)


def build_idp(settings: OidcSettings, services: Services) -> Any:
    """The SAML IdP when `[saml]` is configured (pysaml2 is imported only then). Blocking:
    it may fetch metadata URLs that have no cached copy yet."""
    config = services.config
    saml_settings = config.saml
    if saml_settings is None:
        return None
    from urllib.parse import urlsplit

    from bridge.federation.saml_metadata import MetadataSource, cache_path
    from bridge.federation.saml_server import IdentityProvider, read_or_create_identity

    for key, message in saml_settings.problems():
        raise ConfigError(f"{config.source}: saml.{key}: {message}")
    key_file, cert_file = config.path(saml_settings.key_file), config.path(saml_settings.cert_file)
    cache_dir = config.path(saml_settings.metadata_cache_dir)
    sources = []
    for i, sp in enumerate(saml_settings.service_providers):
        ca = config.path(sp.metadata_ca_file) if sp.metadata_ca_file else None
        signer = config.path(sp.metadata_signing_cert) if sp.metadata_signing_cert else None
        if sp.metadata_url is not None:
            path = cache_path(cache_dir, sp.metadata_url)
        else:
            path = config.path(sp.metadata_file or "")
        refresh = sp.metadata_refresh_minutes * 60.0
        sources.append(MetadataSource(i, path, sp.metadata_url, ca, signer, refresh))
    try:
        read_or_create_identity(key_file, cert_file, urlsplit(settings.issuer).hostname or "")
        next_pair = None
        if saml_settings.next_key_file and saml_settings.next_cert_file:
            next_pair = (
                config.path(saml_settings.next_key_file),
                config.path(saml_settings.next_cert_file),
            )
        return IdentityProvider.build(
            saml_settings, settings.issuer, key_file, cert_file, sources, next_pair
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{config.source}: saml: {exc}") from None


async def start(settings: OidcSettings, services: Services) -> OidcListener:
    provider = build_provider(settings, services)
    idp = await asyncio.to_thread(build_idp, settings, services)
    app = create_app(provider, idp)
    if provider.state.shared:  # SSO sessions and the CSRF key in the shared state too
        await share_sessions(provider.portal, services, SsoSessions(provider.state))
        assert isinstance(provider.portal.sessions, RecordingSessions)
        app = SharedSessions(app, provider.portal.sessions, cookie_name(provider.portal))
    config = services.config
    portal = config.portal or PortalSettings()
    tls_context = listener_context(config, portal.tls_cert, portal.tls_key)
    server, sock, task = await serve_guarded(
        "oidc", app, settings.listen, portal, services, tls_context, portal.trusted_proxies
    )
    if idp is not None:
        idp.start_refreshing()
        if config.server.worker_count() > 1 or config.state_backend in ("redis", "store"):
            # Sign-ins are shared; Single Logout's records are not (docs/federation.md).
            log.warning(
                "saml_logout_per_process",
                detail="SAML Single Logout only finds sessions and SPs this process signed in",
            )
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    log.info("oidc_listening", address=address, issuer=settings.issuer)
    return OidcListener("oidc", [address], provider, server, sock, task, idp, tls_context)
