"""What a front end receives from the app: the core and its config, nothing else.

Front ends expose `async def start(settings, services) -> Listener` in their `server.py`; the
app calls it for each configured section and closes the listeners on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.fdbudget import FdBudget
from bridge.ratelog import RefusalLog

if TYPE_CHECKING:
    from bridge.config import Config


class Listener(Protocol):
    """A running front end: where it listens, and how to stop it."""

    name: str
    addresses: list[str]

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Services:
    config: Config
    authenticator: Authenticator
    audit: Audit
    listeners: list[Listener] = field(default_factory=list)
    hasher: Any = None  # bridge.core.pin.PinHasher, for the metrics listener's KDF pool gauges
    # The descriptor budget every TCP listener's gate shares (`app.serve` measures the real one).
    fds: FdBudget = field(default_factory=FdBudget.unlimited)
    # Refused and cut connections, one line per listener, reason kind and source per interval.
    refusals: RefusalLog = field(default_factory=RefusalLog)
    # True in a worker of `[server] workers = N`: every listener binds with SO_REUSEPORT so the
    # kernel spreads connections and datagrams over the workers (RADIUS sockets come bound and
    # steered from the supervisor instead: `radius_fds`).
    reuse_port: bool = False
    # This process's index among the `[server] workers` (None: the only process).
    worker: int | None = None
    # RADIUS listen index -> the socket the supervisor bound for this worker, steered
    # (bridge.radius.steering): bound nowhere else, and EAP States start with `worker`.
    radius_fds: dict[int, int] = field(default_factory=dict)
