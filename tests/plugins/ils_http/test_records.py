"""The per-record status cache: time is a number the test moves."""

from __future__ import annotations

from bridge.core.patron import Patron
from plugins.ils_http.records import RecordCache


def test_entries_expire_and_the_oldest_go_first() -> None:
    now = [0.0]
    cache = RecordCache(10.0, lambda: now[0], size=2)
    a, b, c = (Patron(barcode=x, record_id=x) for x in "abc")
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a
    cache.put("c", c)  # over the bound: "a" was put first, so it goes
    assert cache.get("a") is None and cache.get("c") is c
    now[0] = 10.0
    assert cache.get("b") is None and cache.get("c") is None
    cache.put("b", b)
    cache.drop("b")
    assert cache.get("b") is None


def test_ttl_zero_caches_nothing() -> None:
    cache = RecordCache(0.0, lambda: 0.0)
    cache.put("a", Patron(barcode="a", record_id="a"))
    assert cache.get("a") is None
