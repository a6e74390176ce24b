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
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import structlog

from bridge import logs
from bridge.config import Config, ConfigError, decode_section
from bridge.control import ControlServer
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.gate import Gate, GateLimits
from bridge.core.pepper import Pepper, PepperError, load_pepper, load_rotated
from bridge.core.pin import KdfParams, PinHasher, PinPolicy, load_blocklist
from bridge.core.store import PluginNotFound, Store, StorePlugin, StoreServices, load_plugin
from bridge.core.throttle import GuessGuard, MemoryBackend, Throttle, ThrottleBackend, ThrottleRules
from bridge.fdbudget import start as fd_budget
from bridge.loop import loop_name
from bridge.pepper_hosts import choose_writer, prove, sync
from bridge.runtime import systemd
from bridge.runtime.binding import bind_error
from bridge.runtime.interpreter import settle_for_serving
from bridge.services import Listener, Services
from bridge.state.shared import SharedState
from bridge.state.shared import build as build_state

log = structlog.get_logger("bridge.app")

# (config section, module with `async def start(settings, services) -> Listener`)
FRONT_ENDS: tuple[tuple[str, str], ...] = (
    ("sip2", "bridge.sip2.server"),
    ("ldap", "bridge.ldap.server"),
    ("radius", "bridge.radius.server"),
    ("portal", "bridge.portal.server"),
    ("staff", "bridge.staff.server"),
    ("oidc", "bridge.federation.server"),
    ("metrics", "bridge.metrics.server"),  # last: its /readyz means every listener above is up
)


class StartFrontEnd(Protocol):
    def __call__(self, settings: Any, services: Services) -> Awaitable[Listener]: ...


@dataclass(slots=True)
class Core:
    hasher: PinHasher
    store: Store
    throttle: GuessGuard
    authenticator: Authenticator
    audit: Audit
    state: SharedState | None = None  # the [state] backend's bus and connections

    async def aclose(self) -> None:
        await self.authenticator.aclose()
        await self.store.aclose()
        if self.state is not None:
            await self.state.aclose()
        self.throttle.close()
        self.hasher.close()


def control_path(config: Config, worker: int | None = None) -> Path:
    """The control socket: `control.socket`, and `control.socket.N` for worker N (the CLI tells
    every one of them, see `bridge.control.notify`)."""
    path = config.path(config.control.socket)
    return path if worker is None else path.with_name(f"{path.name}.{worker}")


def pin_policy(config: Config) -> PinPolicy:
    p = config.pin
    blocklist = load_blocklist(config.path(p.blocklist_file)) if p.blocklist_file else frozenset()
    return PinPolicy(p.min_length, p.max_length, p.forbid_repeats, blocklist, p.one_time_hours)


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


def check_gate(config: Config, kdf_workers: int) -> Gate:
    """The bound on pending PIN checks (`[throttle] max_*_checks`, `check_wait_deadline`)."""
    t = config.throttle
    active = t.max_active_checks or min(4 * kdf_workers, t.max_pending_checks)
    return Gate(
        GateLimits(
            max_active=active,
            max_pending=t.max_pending_checks,
            max_pending_per_source=t.max_pending_per_source,
            wait_deadline=t.check_wait_deadline,
        )
    )


def pepper_file(config: Config) -> Pepper:
    """The configured pepper, read (or made in memory when the file is missing: it is written
    only once the store agrees, see bridge.core.pepper)."""
    try:
        return load_pepper(config.path(config.security.pepper_file))
    except PepperError as exc:
        raise ConfigError(f"{config.source}: security.pepper_file: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: security.pepper_file: cannot read: {exc.strerror}"
        ) from None


def rotated_peppers(config: Config) -> list[Pepper]:
    """The peppers `pepper rotate` added beside the configured file (`<pepper_file>.N`)."""
    try:
        return load_rotated(config.path(config.security.pepper_file))
    except PepperError as exc:
        raise ConfigError(f"{config.source}: security.pepper_file: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: security.pepper_file: cannot read: {exc.strerror}"
        ) from None


def make_hasher(
    config: Config, pepper: Pepper | None = None, rotated: list[Pepper] | None = None
) -> PinHasher:
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
    if pepper is None:
        pepper = pepper_file(config)
        if pepper.new:
            try:
                pepper.persist()
            except OSError as exc:
                raise ConfigError(
                    f"{config.source}: security.pepper_file: cannot create: {exc.strerror}"
                ) from None
    more = {p.id: p.data for p in (rotated or ())}
    return PinHasher(pepper.data, params, workers=s.kdf_workers or None, rotated=more)


def store_settings(config: Config) -> tuple[StorePlugin, Any]:
    """The configured plugin and its `[store]` keys decoded by the plugin's own struct."""
    try:
        plugin = load_plugin(config.store_plugin)
    except PluginNotFound as exc:
        raise ConfigError(f"{config.source}: store.plugin: {exc}") from None
    table = {k: v for k, v in config.store.items() if k != "plugin"}
    return plugin, decode_section(config, table, plugin.settings, "store")


async def open_store(
    config: Config,
    hasher: PinHasher,
    pepper: Pepper | None = None,
    rotated: list[Pepper] | None = None,
) -> Store:
    plugin, settings = store_settings(config)
    services = StoreServices(
        hasher=hasher, base_dir=config.base_dir, pepper=pepper, rotated=tuple(rotated or ())
    )
    try:
        return await plugin.open(settings, services)
    except PepperError as exc:  # one line naming the key; nothing was written
        raise ConfigError(f"{config.source}: security.pepper_file: {exc}") from None


async def open_core(config: Config) -> Core:
    pepper = pepper_file(config)
    rotated = rotated_peppers(config)
    hasher = make_hasher(config, pepper, rotated)
    try:
        store = await open_store(config, hasher, pepper, rotated)
    except BaseException:
        hasher.close()
        raise
    try:
        # a store that keeps no bridge hashes (an ILS) did not write it; the pepper still keys
        # the audit barcode hashes and reset-token MACs, so it is kept
        await asyncio.to_thread(pepper.persist)
    except OSError as exc:
        await store.aclose()
        hasher.close()
        raise ConfigError(
            f"{config.source}: security.pepper_file: cannot create: {exc.strerror}"
        ) from None
    try:  # which held pepper writes: the store's `pepper-active` (bridge.pepper_hosts)
        await choose_writer(config, store, hasher)
    except PepperError as exc:
        await store.aclose()
        hasher.close()
        raise ConfigError(f"{config.source}: security.pepper_file: {exc}") from None
    audit = Audit(config.audit.barcode, hash_key=hasher.derived_key("audit-barcode"))
    try:
        rules = throttle_rules(config)
        state = build_state(
            config, rules, lambda: Throttle(rules, throttle_backend(config, store)), store
        )
        throttle = state.guard
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
        gate=check_gate(config, hasher.workers),
    )
    await state.start(authenticator)
    return Core(hasher, store, throttle, authenticator, audit, state)


def reopen_logs() -> None:
    """SIGUSR1 (logrotate's postrotate): write log and audit files under their names again."""
    logs.reopen()
    log.info("logs_reopened", signal="SIGUSR1")


def hangup(services: Services) -> None:
    """SIGHUP (`systemctl reload`): reopen the log files and re-read the config, telling
    systemd it is reloading."""
    from bridge.reload import reload

    systemd.reloading()
    logs.reopen()
    log.info("logs_reopened", signal="SIGHUP")
    result = reload(services, actor="SIGHUP")
    systemd.ready(
        "serving (reloaded)" if result.ok else f"serving (reload refused: {result.error})"
    )
    if result.ok:  # take up a pepper activation, prove what this host holds
        task = asyncio.get_running_loop().create_task(settle_peppers(services))
        _settling.add(task)
        task.add_done_callback(_settling.discard)


_settling: set[asyncio.Task[str | None]] = set()


async def settle_peppers(services: Services) -> str | None:
    """After a reload (`bridge.pepper_hosts.sync`): None, or the error line."""
    return await sync(services.config, services.authenticator.store, services.hasher)


def reload_answer(services: Services, actor: str) -> dict[str, object]:
    """`patron-bridge reload` through the control socket."""
    from bridge.reload import reload

    systemd.reloading()
    result = reload(services, actor=actor)
    systemd.ready("serving (reloaded)" if result.ok else "serving (reload refused)")
    return result.answer()


def ready_status(listening: dict[str, list[str]]) -> str:
    """The one-line status `systemctl status` shows."""
    return "serving " + ", ".join(f"{name} {' '.join(addrs)}" for name, addrs in listening.items())


async def serve(
    config: Config,
    on_ready: Callable[[dict[str, Any]], None],
    *,
    worker: int | None = None,
    radius_fds: dict[int, int] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or cancellation). `worker`: this process's index among the
    `[server] workers` (listeners shared with SO_REUSEPORT, a control socket of its own)."""
    core = await open_core(config)
    await prove(config, core.authenticator.store, core.hasher)  # the peppers this host holds
    services = Services(
        config, core.authenticator, core.audit, reuse_port=worker is not None, worker=worker
    )
    services.hasher = core.hasher
    services.radius_fds = radius_fds or {}
    services.fds = fd_budget()  # raise the open-file limit, keep a reserve below it
    control = ControlServer(control_path(config, worker), core.authenticator)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGUSR1, reopen_logs)
        loop.add_signal_handler(signal.SIGHUP, hangup, services)
    try:
        await control.start()
        for section, module in FRONT_ENDS:
            settings = getattr(config, section)
            if settings is None:
                continue
            start = cast(StartFrontEnd, importlib.import_module(module).start)
            try:
                services.listeners.append(await start(settings, services))
            except OSError as exc:
                error = bind_error(config, section, settings, exc)
                if error is None:
                    raise
                raise error from None
        listening = {lst.name: lst.addresses for lst in services.listeners}
        metrics = [lst for lst in services.listeners if lst.name == "metrics"]
        control.exposition = getattr(metrics[0], "exposition", None) if metrics else None
        control.reloader = partial(reload_answer, services)
        control.settle = partial(settle_peppers, services)
        health = await core.authenticator.health()
        settle_for_serving()  # freezes start-up's objects, shortens GIL hand-offs
        log.info("ready", loop=loop_name(), listeners=listening, store_ok=health.ok)
        on_ready({"event": "ready", "pid": os.getpid(), "listeners": listening})
        systemd.ready(ready_status(listening))
        await stop.wait()
        systemd.stopping()
        log.info("stopping")
    finally:
        for listener in reversed(services.listeners):
            await listener.aclose()
        await control.aclose()
        await core.aclose()
