"""Client matching (most specific network wins), log limiting and the health cache."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import ClientPolicy
from bridge.radius.clients import (
    AuthenticatorPolicy,
    Client,
    ClientTable,
    HealthCache,
    LogLimiter,
)
from bridge.radius.packet import SharedSecret


def client(name: str, network: str) -> Client:
    return Client(
        name=name,
        network=ipaddress.ip_network(network),
        secret=SharedSecret(name.encode()),
        require_message_authenticator=True,
        limit_proxy_state=True,
        policy=ClientPolicy(),
    )


TABLE = ClientTable(
    [
        client("all-v4", "0.0.0.0/0"),
        client("campus", "10.20.0.0/16"),
        client("controller", "10.20.1.5/32"),
        client("v6", "2001:db8::/32"),
    ]
)


def test_most_specific_network_wins() -> None:
    assert TABLE.match("10.20.1.5") is not None
    assert TABLE.match("10.20.1.5").name == "controller"  # type: ignore[union-attr]
    assert TABLE.match("10.20.9.9").name == "campus"  # type: ignore[union-attr]
    assert TABLE.match("192.0.2.1").name == "all-v4"  # type: ignore[union-attr]


def test_ipv6_and_mapped_addresses() -> None:
    assert TABLE.match("2001:db8::1").name == "v6"  # type: ignore[union-attr]
    assert TABLE.match("::ffff:10.20.1.5").name == "controller"  # type: ignore[union-attr]
    assert TABLE.match("2001:db9::1") is None
    assert TABLE.match("not an address") is None


def test_memo_is_bounded() -> None:
    table = ClientTable([client("one", "127.0.0.1/32")], memo_size=8)
    for i in range(100):
        table.match(f"10.0.0.{i}")
    assert len(table._memo) <= 8
    assert table.match("127.0.0.1") is not None


@given(st.ip_addresses(v=4))
def test_property_match_is_longest_prefix(address: ipaddress.IPv4Address) -> None:
    found = TABLE.match(str(address))
    candidates = [
        n
        for n in ("0.0.0.0/0", "10.20.0.0/16", "10.20.1.5/32")
        if address in ipaddress.ip_network(n)
    ]
    best = max(candidates, key=lambda n: ipaddress.ip_network(n).prefixlen)
    assert found is not None and str(found.network) == best


def test_log_limiter_once_per_interval_counts_suppressed() -> None:
    limiter = LogLimiter(60)
    assert limiter.allow("a", 0) == 0
    assert limiter.allow("a", 1) is None
    assert limiter.allow("a", 2) is None
    assert limiter.allow("b", 2) == 0
    assert limiter.allow("a", 61) == 2


def test_log_limiter_key_table_is_bounded() -> None:
    limiter = LogLimiter(60, max_keys=10)
    allowed = [limiter.allow(i, 0) for i in range(100)]
    assert allowed.count(0) == 10
    assert len(limiter._last) <= 10


def test_health_cache() -> None:
    cache = HealthCache(ttl=2)
    assert cache.get(0) is None
    cache.put(True, 10)
    assert cache.get(11) is True
    assert cache.get(12) is None
    cache.put(False, 12)
    assert cache.get(13) is False


def test_authenticator_policy_modes() -> None:
    policy = AuthenticatorPolicy(max_entries=2)
    always = client("always", "10.0.0.0/8")
    never = dataclasses.replace(always, name="never", require_message_authenticator=False)
    auto = dataclasses.replace(always, name="auto", require_message_authenticator="auto")
    assert policy.required(always, "10.0.0.1") and not policy.required(never, "10.0.0.1")
    assert not policy.required(auto, "10.0.0.1")  # never signed yet: accepted unsigned
    policy.learn("auto", "10.0.0.1")
    assert policy.required(auto, "10.0.0.1")  # signed once: required from then on
    assert not policy.required(auto, "10.0.0.2")  # per NAS address
    policy.learn("auto", "10.0.0.2")
    policy.learn("auto", "10.0.0.3")  # full: stops learning, never forgets
    assert policy.required(auto, "10.0.0.1") and policy.required(auto, "10.0.0.2")
    assert not policy.required(auto, "10.0.0.3")


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.booleans()), max_size=30))
def test_property_auto_once_required_stays_required(events: list[tuple[str, bool]]) -> None:
    policy = AuthenticatorPolicy()
    auto = dataclasses.replace(client("auto", "10.0.0.0/8"), require_message_authenticator="auto")
    signed: set[str] = set()
    for source, has_ma in events:
        assert policy.required(auto, source) == (source in signed)
        if has_ma:
            policy.learn("auto", source)
            signed.add(source)
