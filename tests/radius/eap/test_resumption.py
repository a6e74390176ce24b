"""What a resumable TTLS session authorised: bounded in count and age, per client."""

from __future__ import annotations

from bridge.radius.eap.resumption import Remembered, ResumptionCache


def test_recall_is_per_client_and_expires() -> None:
    cache = ResumptionCache(lifetime=60)
    cache.remember(b"k1", "21234000000001", "wifi", now=0)
    assert cache.recall(b"k1", "wifi", now=59) == Remembered("21234000000001", "wifi", 60)
    assert cache.recall(b"k1", "other-nas", now=1) is None
    assert cache.recall(None, "wifi", now=1) is None
    assert cache.recall(b"k2", "wifi", now=1) is None
    assert cache.recall(b"k1", "wifi", now=60) is None
    assert len(cache) == 0


def test_bounded_in_count_oldest_first() -> None:
    cache = ResumptionCache(lifetime=60, limit=3)
    for n in range(5):
        cache.remember(bytes([n]), f"card{n}", "wifi", now=n)
    assert len(cache) == 3
    assert cache.recall(bytes([1]), "wifi", now=5) is None
    assert cache.recall(bytes([4]), "wifi", now=5) is not None


def test_forget_and_clear() -> None:
    cache = ResumptionCache(lifetime=60)
    cache.remember(b"k", "c", "wifi", now=0)
    cache.forget(b"k")
    cache.forget(None)
    assert cache.recall(b"k", "wifi", now=1) is None
    cache.remember(b"k", "c", "wifi", now=0)
    cache.clear()
    assert len(cache) == 0
