"""The pure pieces of the collectors and recorder: drop reasons become bounded labels, the
histogram is cumulative, store calls are timed without the store knowing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.metrics.collectors import drop_label
from bridge.metrics.recorder import LATENCY_BOUNDS, Histogram, Recorder, instrument_store


def test_drop_labels() -> None:
    assert drop_label("malformed: length 3 < 20") == "malformed"
    assert drop_label("bad Message-Authenticator (wrong secret?)") == "bad_message_authenticator"
    assert drop_label("unsupported packet code 4") == "unsupported_packet_code"
    assert drop_label("unknown client") == "unknown_client"
    assert drop_label("") == "other"


@given(st.text(max_size=200))
def test_property_drop_label_never_carries_detail(reason: str) -> None:
    label = drop_label(reason)
    assert label and ":" not in label and "(" not in label and " " not in label


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_property_histogram_is_cumulative(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    pairs = histogram.cumulative()
    assert [le for le, _ in pairs] == [*map(repr, LATENCY_BOUNDS), "+Inf"]
    counts = [count for _, count in pairs]
    assert counts == sorted(counts) and counts[-1] == len(values)
    for le, count in pairs[:-1]:
        assert count == sum(1 for v in values if v <= float(le))


class Store:
    async def lookup(self, barcode: str) -> str:
        if barcode == "boom":
            raise RuntimeError("down")
        return barcode


def test_store_calls_are_timed_once() -> None:
    recorder = Recorder()
    store = Store()
    assert instrument_store(store, recorder) == ["lookup"]
    assert instrument_store(store, recorder) == []  # never wrapped twice
    assert asyncio.run(store.lookup("x")) == "x"
    with pytest.raises(RuntimeError):
        asyncio.run(store.lookup("boom"))
    assert sum(recorder.store_calls["lookup"].counts) == 2
    assert recorder.store_errors["lookup"] == 1


def test_recorder_sums_its_slots_at_scrape_time() -> None:
    from bridge.core.patron import Context, Decision, Outcome

    recorder = Recorder()
    ctx = Context("sip2", "selfcheck", "127.0.0.1")
    right = Decision(Outcome.ACCEPTED, None, "verified", pin_ok=True)
    locked = Decision(Outcome.CARD_LOCKED, None, "locked")
    recorder.observe(ctx, right, 0.2, "store")
    recorder.observe(ctx, right, 0.00001, "cached")
    recorder.observe(ctx, locked, 0.00001, "cached")
    assert recorder.decisions() == {
        ("sip2", "selfcheck", Outcome.ACCEPTED): 2,
        ("sip2", "selfcheck", Outcome.CARD_LOCKED): 1,
    }
    assert recorder.cache() == (1, 1)  # the locked card is neither a hit nor a miss
    latency = recorder.latency()
    assert sum(latency[("sip2", "cached")].counts) == 2
    assert latency[("sip2", "store")].total == 0.2
