"""Conversations in flight: per-client and total limits, idle expiry, and memory that goes
back down after 200 conversations are abandoned halfway through the TLS handshake."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from OpenSSL import SSL

from bridge.radius.eap import codec
from bridge.radius.eap.codec import Eap
from bridge.radius.eap.conversation import Challenge, Conversation
from bridge.radius.eap.table import ConversationTable
from bridge.radius.eap.tunnel import Tunnel, server_context
from bridge.tls import generate_chain
from tests.radius.eap.peer import Peer


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("table")
    paths = {n: d / f"{n}.pem" for n in ("ca", "ca-key", "server", "key")}
    generate_chain(paths["ca"], paths["ca-key"], paths["server"], paths["key"], ["radius"])
    return paths


@pytest.fixture(scope="module")
def context(chain: dict[str, Path]) -> SSL.Context:
    return server_context(chain["server"], chain["key"], None)


def make(context: SSL.Context, n: int, client: str = "wifi", now: float = 0.0) -> Conversation:
    return Conversation(
        n.to_bytes(16, "big"), client, Tunnel(context), max_message=65536, max_rounds=50, now=now
    )


def test_limits_per_client_and_total(context: SSL.Context) -> None:
    table = ConversationTable(max_total=5, max_per_client=3, timeout=30)
    for n in range(3):
        assert table.room_for("a", 0) is None
        table.add(make(context, n, "a"), 0)
    assert table.room_for("a", 0) == "too many EAP conversations in flight for this client"
    for n in range(3, 5):
        assert table.room_for("b", 0) is None
        table.add(make(context, n, "b"), 0)
    assert table.room_for("c", 0) == "too many EAP conversations in flight"
    table.remove((0).to_bytes(16, "big"))
    assert table.count("a") == 2 and table.room_for("a", 0) is None


def test_state_belongs_to_its_client_and_expires_when_idle(context: SSL.Context) -> None:
    table = ConversationTable(max_total=10, max_per_client=10, timeout=30)
    first, second = make(context, 1), make(context, 2)
    table.add(first, 0)
    table.add(second, 10)
    assert table.get(first.state, "other-nas", 20) is None
    assert table.get(first.state, "wifi", 20) is first  # activity at 20 keeps it
    assert table.expire(45) == 1  # second idle since 10
    assert table.get(first.state, "wifi", 45) is first
    assert table.get(second.state, "wifi", 45) is None
    assert table.expire(100) == 1 and len(table) == 0 and table.count("wifi") == 0


def half_open(context: SSL.Context, chain: dict[str, Path], n: int) -> Conversation:
    """A conversation that got the peer's ClientHello and sent its flight, then was abandoned."""
    conv = make(context, n)
    peer = Peer(chain["ca"], b"u", b"p")
    start = conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"anonymous"))
    step = conv.step(peer.respond(codec.decode(start.eap)), 1000)
    assert isinstance(step, Challenge)
    return conv


def live() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Conversation))


def test_two_hundred_abandoned_conversations_are_forgotten(
    context: SSL.Context, chain: dict[str, Path]
) -> None:
    table = ConversationTable(max_total=1000, max_per_client=1000, timeout=30)
    for n in range(5):  # warm up OpenSSL's and Python's one-time allocations
        table.add(half_open(context, chain, n), 0)
    table.expire(100)
    before_objects = live()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        for n in range(200):
            table.add(half_open(context, chain, 1000 + n), 100 + n * 0.01)
        assert len(table) == 200
        grown, _ = tracemalloc.get_traced_memory()
        assert table.expire(100 + 2 + 30) == 200
        assert len(table) == 0 and table.count("wifi") == 0
        assert live() == before_objects
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grown > baseline  # the 200 held something while alive
    assert after - baseline < (grown - baseline) / 4  # and it went back down
