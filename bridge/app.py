"""Builds everything from a Config, starts the configured listeners, stops them on a signal.

`open_core` is shared by the daemon and the CLI so both get the same hasher (pepper), store and
throttle state. Front ends are started from one table; each module's `start(settings, services)`
returns a Listener. Readiness is an event (`on_ready` receives the bound addresses), never a
sleep: the daemon prints one JSON line on stdout that harnesses and init systems wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import structlog

from bridge.config import Config, ConfigError, decode_section
from bridge.control import ControlServer
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.pin import KdfParams, PinHasher, PinPolicy, load_blocklist, read_or_create_pepper
from bridge.core.store import PluginNotFound, Store, StorePlugin, StoreServices, load_plugin
from bridge.core.throttle import MemoryBackend, Throttle, ThrottleBackend, ThrottleRules
from bridge.loop import loop_name
from bridge.services import Listener, Services

log = structlog.get_logger("bridge.app")

# (config section, module with `async def start(settings, services) -> Listener`)
FRONT_ENDS: tuple[tuple[str, str], ...] = (
    ("sip2", "bridge.sip2.server"),
    ("ldap", "bridge.ldap.server"),
    ("radius", "bridge.radius.server"),
    ("portal", "bridge.portal.server"),
    ("oidc", "bridge.federation.server"),
)


class StartFrontEnd(Protocol):
    def __call__(self, settings: Any, services: Services) -> Awaitable[Listener]: ...


@dataclass(slots=True)
class Core:
    hasher: PinHasher
    store: Store
    throttle: Throttle
    authenticator: Authenticator
    audit: Audit

    async def aclose(self) -> None:
        await self.authenticator.aclose()
        await self.store.aclose()
        self.throttle.close()
        self.hasher.close()


def pin_policy(config: Config) -> PinPolicy:
    p = config.pin
    blocklist = load_blocklist(config.path(p.blocklist_file)) if p.blocklist_file else frozenset()
    return PinPolicy(p.min_length, p.max_length, p.forbid_repeats, blocklist)


def throttle_backend(config: Config, store: Store | None = None) -> ThrottleBackend:
    if config.throttle.state == "memory":
        return MemoryBackend()
    if config.throttle.state == "store":  # shared by every host on that store (postgres)
        make = getattr(store, "throttle_backend", None)
        if make is None:
            raise ConfigError(
                f"{config.source}: throttle.state: the {config.store_plugin} store cannot keep "
                "throttle counters"
            )
        backend: ThrottleBackend = make()
        return backend
    from bridge.state.sqlite_throttle import SqliteThrottleBackend

    return SqliteThrottleBackend(config.path(config.throttle.path))


def throttle_rules(config: Config) -> ThrottleRules:
    t = config.throttle
    return ThrottleRules(
        card_free_failures=t.card_free_failures,
        card_delay_base=t.card_delay_base,
        card_delay_max=t.card_delay_max,
        card_lock_after=t.card_lock_after,
        card_lock_seconds=t.card_lock_seconds,
        card_forget_after=t.card_forget_after,
        source_max_failures=t.source_max_failures,
        source_window=t.source_window,
        source_block_seconds=t.source_block_seconds,
        global_max_failures=t.global_max_failures,
        global_window=t.global_window,
    )


def make_hasher(config: Config) -> PinHasher:
    s = config.security
    params = KdfParams(
        algorithm=s.kdf,
        argon2_memory_kib=s.argon2_memory_kib,
        argon2_iterations=s.argon2_iterations,
        argon2_lanes=s.argon2_lanes,
        scrypt_log2_n=s.scrypt_log2_n,
        scrypt_r=s.scrypt_r,
        scrypt_p=s.scrypt_p,
    )
    try:
        pepper = read_or_create_pepper(config.path(s.pepper_file))
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: security.pepper_file: cannot read or create: {exc.strerror}"
        ) from None
    return PinHasher(pepper, params, workers=s.kdf_workers or None)


def store_settings(config: Config) -> tuple[StorePlugin, Any]:
    """The configured plugin and its `[store]` keys decoded by the plugin's own struct."""
    try:
        plugin = load_plugin(config.store_plugin)
    except PluginNotFound as exc:
        raise ConfigError(f"{config.source}: store.plugin: {exc}") from None
    table = {k: v for k, v in config.store.items() if k != "plugin"}
    return plugin, decode_section(config, table, plugin.settings, "store")


async def open_store(config: Config, hasher: PinHasher) -> Store:
    plugin, settings = store_settings(config)
    return await plugin.open(settings, StoreServices(hasher=hasher, base_dir=config.base_dir))


async def open_core(config: Config) -> Core:
    hasher = make_hasher(config)
    try:
        store = await open_store(config, hasher)
    except BaseException:
        hasher.close()
        raise
    audit = Audit(config.audit.barcode, hash_key=hasher.derived_key("audit-barcode"))
    try:
        throttle = Throttle(throttle_rules(config), throttle_backend(config, store))
    except BaseException:
        await store.aclose()
        hasher.close()
        raise
    authenticator = Authenticator(
        store,
        throttle=throttle,
        cache=VerifiedCache(config.cache.ttl, config.cache.max_entries),
        audit=audit,
        policy=pin_policy(config),
        clock=time.time,
    )
    return Core(hasher, store, throttle, authenticator, audit)


async def serve(config: Config, on_ready: Callable[[dict[str, Any]], None]) -> None:
    """Run until SIGINT/SIGTERM (or cancellation)."""
    core = await open_core(config)
    services = Services(config, core.authenticator, core.audit)
    control = ControlServer(config.path(config.control.socket), core.authenticator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await control.start()
        for section, module in FRONT_ENDS:
            settings = getattr(config, section)
            if settings is None:
                continue
            start = cast(StartFrontEnd, importlib.import_module(module).start)
            services.listeners.append(await start(settings, services))
        listening = {lst.name: lst.addresses for lst in services.listeners}
        health = await core.authenticator.health()
        log.info("ready", loop=loop_name(), listeners=listening, store_ok=health.ok)
        on_ready({"event": "ready", "pid": os.getpid(), "listeners": listening})
        await stop.wait()
        log.info("stopping")
    finally:
        for listener in reversed(services.listeners):
            await listener.aclose()
        await control.aclose()
        await core.aclose()
