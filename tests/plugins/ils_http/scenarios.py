"""Failure scenarios every HTTP connector's tests run the same way, with the same assertions.

Each vendor's test file names its own route (the double's fault switch) and what to count; the
steps and what they prove (a 429 opens the breaker without another request, a slow ILS ends at
the deadline after one PIN check, a closed port is "cannot connect" and unhealthy) live here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from tests.pins import DEMO_PIN
from tests.plugins.conftest import CountingHasher, open_plugin
from tests.plugins.seed import ACTIVE


async def breaker_holds_after_429(double: Any, store: Any, route: str) -> None:
    """A 429 on the PIN check is "rate limited"; the next check is refused by the breaker."""
    double.fail(route, "429")
    with pytest.raises(StoreUnavailable, match="rate limited"):
        await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    before = len(double.requests)
    with pytest.raises(StoreUnavailable, match="circuit"):
        await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert len(double.requests) == before  # not sent: the ILS asked for a pause


async def slow_check_ends_at_the_deadline(
    double: Any, store: Any, route: str, sent: Callable[[], int]
) -> None:
    """A PIN check the ILS never answers times out, sent once (`sent` counts it)."""
    double.fail(route, "slow")
    with pytest.raises(StoreUnavailable, match="timed out"):
        await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert sent() == 1
    double.release.set()


async def connection_refused(plugin: str, settings: dict[str, Any], tmp_path: Path) -> None:
    """A base URL on a closed loopback port: "cannot connect" until the breaker opens
    (`breaker_failures` in `settings`), then "circuit" at once; health says not ok."""
    store = await open_plugin(plugin, settings, CountingHasher(), tmp_path)
    try:
        for _ in range(settings["breaker_failures"]):
            with pytest.raises(StoreUnavailable, match="cannot connect"):
                await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        with pytest.raises(StoreUnavailable, match="circuit"):
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert not (await store.health()).ok
    finally:
        await store.aclose()


async def pin_check_fails(double: Any, store: Any, route: str, kind: str) -> None:
    """A fault of `kind` on `route` while checking a PIN is `StoreUnavailable`, nothing else."""
    double.fail(route, kind)
    with pytest.raises(StoreUnavailable):
        await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
