"""Builds the state every worker and host must share, from `[state]`, and wires it to the core.

`build` returns the guessing guard the Authenticator uses and the invalidation bus; `attach`
makes every invalidation the core does (PIN change, reset, block, lock) go out on the bus and
every one that comes in drop this process's cached verification, the card's portal sessions
and any local copy of the card's throttle refusal.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import structlog

from bridge.core.throttle import Counter
from bridge.state.bus import Bus, LocalBus

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.core.auth import Authenticator

log = structlog.get_logger("bridge.state")


@dataclass(slots=True)
class SharedState:
    guard: Any  # a GuessGuard
    bus: Bus = field(default_factory=LocalBus)
    client: Any = None  # the Redis client, when there is one
    _ttl: float | None = None

    def attach(self, authenticator: Authenticator) -> Callable[[str], None]:
        """Publish the core's invalidations; the publisher callback (kept out of re-delivery)."""

        def publish(barcode: str) -> None:
            self.bus.publish("invalidate", barcode)

        authenticator.on_invalidate.append(publish)
        return publish

    async def start(self, authenticator: Authenticator) -> None:
        if isinstance(self.bus, LocalBus):  # one process: nobody to tell, nothing to hear
            return
        publish = self.attach(authenticator)
        guard = self.guard

        def received(op: str, barcode: str) -> None:
            if op == "clear_lock":
                forget = getattr(guard, "forget", None)
                if forget is not None:
                    forget(barcode)
            authenticator.cache.invalidate(barcode)
            for callback in list(authenticator.on_invalidate):
                if callback is not publish:
                    callback(barcode)

        def deaf() -> None:
            # Invalidations may be missed from now on: trust no cached verification.
            cache = authenticator.cache
            if self._ttl is None:
                self._ttl = cache.ttl
            cache.clear()
            cache.ttl = 0
            log.error("verified_cache_off", detail="invalidations cannot be received")

        def hearing() -> None:
            if self._ttl is not None:
                authenticator.cache.clear()
                authenticator.cache.ttl = self._ttl
                self._ttl = None
                log.warning("verified_cache_on", detail="invalidations are received again")

        await self.bus.start(received, deaf, hearing)

    async def aclose(self) -> None:
        closer = getattr(self.guard, "aclose", None)
        if closer is not None:
            await closer()
        await self.bus.aclose()
        if self.client is not None:
            await self.client.aclose()


def redis_ca(config: Config) -> Any:
    """`state.tls_ca_file` resolved against the config file's directory, or None."""
    return config.path(config.state.tls_ca_file) if config.state.tls_ca_file else None


def build(
    config: Config, rules: Any, make_default: Callable[[], Any], store: Any = None
) -> SharedState:
    """The configured backend; `make_default` builds the process-local Throttle (memory, or
    sqlite write-behind for one process) exactly as before."""
    backend = config.state_backend
    state = config.state
    share = state.hosts * config.server.worker_count()
    if backend == "store":  # the postgres store's own tables, live
        make = getattr(store, "shared_throttle", None)
        if make is None:
            from bridge.config import ConfigError

            raise ConfigError(
                f"{config.source}: throttle.state: the {config.store_plugin} store cannot keep "
                "throttle counters"
            )
        guard, store_bus = make(rules, state.retry_seconds)
        return SharedState(guard, store_bus)
    if backend == "redis":
        from bridge.state.bus import RedisBus
        from bridge.state.redis_client import connect
        from bridge.state.redis_throttle import RedisGuard

        client = connect(state, redis_ca(config))
        bus = RedisBus(client, state.key_prefix, state.retry_seconds)
        guard = RedisGuard(
            rules,
            client,
            prefix=state.key_prefix,
            bus=bus,
            fallback=state.on_state_unavailable,
            share=share,
            retry_seconds=state.retry_seconds,
        )
        return SharedState(guard, bus, client)
    if backend == "sqlite" and config.server.worker_count() > 1:
        from bridge.state.bus import SqliteBus
        from bridge.state.sqlite_guard import SqliteGuard

        path = config.state_path
        file_bus = SqliteBus(path, state.poll_seconds)
        return SharedState(SqliteGuard(rules, path, bus=file_bus), file_bus)
    return SharedState(make_default())


def staff_guard(config: Config, rules: Any, store: Any = None) -> SharedState | None:
    """The staff desk's sign-in limits on the shared backend, so every worker and host spends
    one budget per staff account and per source; None where the state is one process's own
    (then the desk keeps a `Throttle` of its own). A namespace apart from patrons' where the
    backend allows it (Redis: `<key_prefix>staff:`; SQLite: a `-staff` file beside the state
    file), so a staff password guess never counts against a card or a patron's source, and
    back; with `[state] backend = "store"` (PostgreSQL's fixed tables) staff keys are
    `staff <name>` (a space: never a barcode), and the source and global counters are shared
    with patrons'. Its bus is local: staff sign-ins invalidate nothing."""
    backend = config.state_backend
    state = config.state
    if backend == "store":
        make = getattr(store, "shared_throttle", None)
        return None if make is None else SharedState(make(rules, state.retry_seconds)[0])
    if backend == "redis":
        from bridge.state.redis_client import connect
        from bridge.state.redis_throttle import RedisGuard

        client = connect(state, redis_ca(config))
        guard = RedisGuard(
            rules,
            client,
            prefix=state.key_prefix + "staff:",
            bus=LocalBus(),
            fallback=state.on_state_unavailable,
            share=state.hosts * config.server.worker_count(),
            retry_seconds=state.retry_seconds,
        )
        return SharedState(guard, LocalBus(), client)
    if backend == "sqlite" and config.server.worker_count() > 1:
        from bridge.state.sqlite_guard import SqliteGuard

        path = config.state_path
        return SharedState(SqliteGuard(rules, path.with_name(path.name + "-staff"), bus=LocalBus()))
    return None


# -- the CLI's questions, answered by the shared state itself (not a process's local view) -------


async def card_locked(guard: Any, barcode: str, now: float) -> bool:
    peek = getattr(guard, "peek", None)
    if peek is not None:  # Redis
        return bool((await peek(barcode, now))[1])
    locked_now = getattr(guard, "locked_now", None)
    if locked_now is not None:  # the SQLite file of several workers
        return bool(await asyncio.to_thread(locked_now, barcode, now))
    return bool(guard.card_locked(barcode, now))


async def card_counter(guard: Any, barcode: str, now: float) -> Counter | None:
    """The card's counter for display (the staff desk): the live copy from this process's
    throttle, or what the shared backend holds (`counter_now`: SQLite file, PostgreSQL, Redis),
    the end of its lock or delay included. A guard with neither gives failures and whether
    locked, and its lock shows as held until cleared."""
    local = getattr(guard, "card_counter", None)
    if local is not None:
        return cast(Counter | None, local(barcode, now))
    shared = getattr(guard, "counter_now", None)
    if shared is not None:
        if inspect.iscoroutinefunction(shared):
            return cast(Counter | None, await shared(barcode, now))
        return cast(Counter | None, await asyncio.to_thread(shared, barcode, now))
    failures = await card_failures(guard, barcode, now)
    locked = await card_locked(guard, barcode, now)
    if not failures and not locked:
        return None
    return Counter(failures=failures, locked=locked, blocked_until=math.inf if locked else 0.0)


async def card_failures(guard: Any, barcode: str, now: float) -> int:
    peek = getattr(guard, "peek", None)
    if peek is not None:
        return int((await peek(barcode, now))[0])
    if hasattr(guard, "locked_now"):
        return int(await asyncio.to_thread(guard.failures, barcode, now))
    return int(guard.failures(barcode, now))


async def flush_guard(guard: Any) -> None:
    """Wait until the guard's writes are done (the CLI exits right after)."""
    settled = getattr(guard, "settled", None)
    if settled is not None:
        await settled()
        return
    backend = getattr(guard, "backend", None)
    if backend is not None:
        backend.close()
