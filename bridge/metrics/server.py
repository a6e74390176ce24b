"""The metrics listener: `/metrics` (Prometheus), `/healthz` (alive) and `/readyz` (serving).

Served by uvicorn inside the daemon's event loop, like the PIN pages (`bridge.portal.server`),
so a scrape reads the live state on the thread that owns it. It is started after every other
front end (last in `bridge.app.FRONT_ENDS`) and closed before them: while it answers `/readyz`
with 200, every configured listener is bound and the store answered its last health probe.

- `/healthz`: 200 `ok` while the process and its event loop run (a liveness probe).
- `/readyz`: 200 `ready` when the listeners are up and the store is healthy, else 503 and the
  reason on one line (a readiness probe; load balancers take the node out on 503).
- `/metrics`: the exposition, text format or OpenMetrics by the Accept header.

With `[server] workers = N` only worker 0 binds this listener; every worker keeps its own
numbers and hands them out over its control socket, and worker 0 answers a scrape with all of
them merged (a `worker` label; `bridge.metrics.aggregate`), and `/readyz` with 503 while a
worker does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bridge.loop import loop_name
from bridge.metrics.aggregate import gather
from bridge.metrics.collectors import BridgeCollector, StoreHealth
from bridge.metrics.recorder import Recorder, instrument_store
from bridge.metrics.settings import MetricsSettings
from bridge.services import Services
from bridge.settings import parse_listen
from bridge.tls import listener_context

log = structlog.get_logger("bridge.metrics")


class Metrics:
    """The registry, the recorder hooked into the audit, and the store health probe."""

    def __init__(self, settings: MetricsSettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.recorder = Recorder()
        self.health = StoreHealth()
        self._probe: asyncio.Task[None] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            BridgeCollector(
                recorder=self.recorder,
                authenticator=services.authenticator,
                hasher=services.hasher,
                listeners=services.listeners,
                health=self.health,
                loop_name=loop_name(),
            )
        )
        for extra in (ProcessCollector, PlatformCollector, GCCollector):
            extra(registry=self.registry)

    def attach(self) -> None:
        """Start counting: the audit's decision hook and the store's timed calls."""
        self.services.audit.observe = self.recorder.observe
        instrument_store(self.services.authenticator.store, self.recorder)

    def detach(self) -> None:
        if self.services.audit.observe == self.recorder.observe:
            self.services.audit.observe = None

    async def refresh_health(self) -> StoreHealth:
        """The store's health, probed at most once per `health_ttl` (concurrent callers share
        one probe), bounded by `health_timeout`."""
        h = self.health
        if h.checked_at and time.monotonic() - h.checked_at < self.settings.health_ttl:
            return h
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())
        await asyncio.shield(self._probe)
        return h

    async def _run_probe(self) -> None:
        h = self.health
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                result = await self.services.authenticator.health()
            h.ok, h.detail = result.ok, result.detail or "ok"
        except TimeoutError:
            h.ok, h.detail = False, f"no answer within {self.settings.health_timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - whatever broke, the store is not ready
            log.warning("metrics_health_probe_failed", error=type(exc).__name__)
            h.ok, h.detail = False, f"health check failed: {type(exc).__name__}"
        h.seconds = time.perf_counter() - started
        h.checked_at = time.monotonic()

    # -- HTTP -------------------------------------------------------------------------------
    async def metrics(self, request: Request) -> Response:
        await self.refresh_health()
        workers = self.workers()
        if workers:  # `[server] workers = N`: every worker's numbers, labelled by worker
            merged, _silent = await gather(workers)
            return Response(merged, media_type=CONTENT_TYPE_LATEST)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), media_type=content_type)

    def workers(self) -> dict[str, Path]:
        """Worker id → control socket, when this process is one of several workers (worker 0
        serves the listener and asks the others over their control sockets), else empty."""
        services = self.services
        if services.worker is None:
            return {}
        config = services.config
        socket_path = config.path(config.control.socket)
        return {
            str(i): socket_path.with_name(f"{socket_path.name}.{i}")
            for i in range(config.server.worker_count())
        }

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(self, request: Request) -> Response:
        health = await self.refresh_health()
        if not health.ok:
            return PlainTextResponse(f"store not ready: {health.detail}\n", status_code=503)
        workers = self.workers()
        if workers:
            _merged, silent = await gather(workers)
            if silent:
                names = ", ".join(silent)
                return PlainTextResponse(f"workers not answering: {names}\n", status_code=503)
        return PlainTextResponse("ready\n")

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/metrics", self.metrics),
                Route("/healthz", self.healthz),
                Route("/readyz", self.readyz),
            ]
        )


@dataclass(slots=True)
class MetricsListener:
    name: str
    addresses: list[str]
    metrics: Metrics
    # None in workers other than 0: they only count, worker 0 answers the scrape for them all
    server: uvicorn.Server | None
    sock: socket.socket | None
    task: asyncio.Task[None] | None
    # HTTPS: the context every new handshake uses (a reload loads rotated files into it)
    tls_context: ssl.SSLContext | None = None

    def exposition(self) -> bytes:
        """This process's metrics in the text format (the control socket's `metrics` op)."""
        return generate_latest(self.metrics.registry)

    async def aclose(self) -> None:
        self.metrics.detach()
        if self.server is not None and self.task is not None and self.sock is not None:
            self.server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            await self.server.shutdown(sockets=[self.sock])
        if self.metrics._probe is not None:
            self.metrics._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.metrics._probe


def bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(settings: MetricsSettings, services: Services) -> MetricsListener:
    metrics = Metrics(settings, services)
    if services.worker not in (None, 0):  # worker 0 serves the scrape for every worker
        metrics.attach()
        return MetricsListener("metrics", [], metrics, None, None, None)
    uv_config = uvicorn.Config(
        metrics.app(),
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    uv_config.load()
    tls_context = listener_context(services.config, settings.tls_cert, settings.tls_key)
    if tls_context is not None:
        uv_config.ssl = tls_context  # what uvicorn's startup hands to create_server
    sock = bind(settings.listen)
    server = uvicorn.Server(uv_config)
    server.lifespan = uv_config.lifespan_class(uv_config)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    metrics.attach()
    task = asyncio.get_running_loop().create_task(server.main_loop(), name="metrics")
    scheme = "https" if tls_context is not None else "http"
    log.info("metrics_listening", address=_address(sock), scheme=scheme)
    return MetricsListener("metrics", [_address(sock)], metrics, server, sock, task, tls_context)
