"""One worker of `[server] workers = N`: the full daemon, on listeners shared with its siblings.

The supervisor starts it as `patron-bridge serve --worker I --listen-map JSON` with a pipe on
stdin. The worker never reads from that pipe; it only notices the pipe closing (the supervisor
died, even by SIGKILL) and then stops as on SIGTERM, so no orphan keeps the ports.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from bridge.app import serve
from bridge.config import Config, ConfigError
from bridge.runtime import listeners

STDIN = 0


def parse_mapping(text: str, source: str) -> dict[str, str]:
    """The supervisor's `--listen-map` (JSON object of strings)."""
    try:
        mapping = json.loads(text)
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ConfigError(f"{source}: (--listen-map): not a JSON object of addresses")
    return mapping


def _watch_parent() -> None:
    """Block on stdin until it closes, then stop this worker as SIGTERM would."""
    try:  # the bare descriptor: a buffered stdin's lock would trouble interpreter shutdown
        while os.read(STDIN, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


async def run(
    config: Config, index: int, mapping: dict[str, str], on_ready: Callable[[dict[str, Any]], None]
) -> None:
    threading.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
    fds = listeners.inherited(mapping)
    await serve(listeners.apply(config, mapping), on_ready, worker=index, radius_fds=fds)
