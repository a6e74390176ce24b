"""Several workers, one scrape: the real daemon's control socket hands out its exposition, and
expositions merge with a `worker` label (the `[server] workers` design; see aggregate.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics.aggregate import gather, merge
from tests.harness import DEMO, Daemon
from tests.metrics.test_daemon_metrics import SECTIONS
from tests.pins import DEMO_PIN
from tests.test_daemon import Sip2


def exposition(decisions: float, queue: float, latency: list[float]) -> str:
    registry = CollectorRegistry()
    Counter("patron_bridge_decisions", "d", ["outcome"], registry=registry).labels("accepted").inc(
        decisions
    )
    Gauge("patron_bridge_kdf_queue_depth", "q", registry=registry).set(queue)
    histogram = Histogram("patron_bridge_request_duration_seconds", "l", registry=registry)
    for value in latency:
        histogram.observe(value)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_merge_labels_every_sample_with_its_worker() -> None:
    merged = merge([("0", exposition(3, 1, [0.001])), ("1", exposition(5, 0, [0.2, 0.3]))])
    got = samples(merged.decode())
    key = ("patron_bridge_decisions_total", (("outcome", "accepted"), ("worker", "0")))
    assert got[key] == 3
    assert got[("patron_bridge_decisions_total", (("outcome", "accepted"), ("worker", "1")))] == 5
    assert got[("patron_bridge_kdf_queue_depth", (("worker", "0"),))] == 1
    assert got[("patron_bridge_request_duration_seconds_count", (("worker", "1"),))] == 2
    text = merged.decode()
    assert text.count("# TYPE patron_bridge_decisions_total counter") == 1
    assert text.count("# HELP patron_bridge_kdf_queue_depth") == 1


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**6), st.integers(0, 100), st.lists(st.floats(0, 20), max_size=5)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_property_merge_keeps_every_worker_sample(
    workers: list[tuple[int, int, list[float]]],
) -> None:
    parts = [(str(i), exposition(d, q, lat)) for i, (d, q, lat) in enumerate(workers)]
    merged = samples(merge(parts).decode())
    expected = {}
    for worker, text in parts:
        for (name, labels), value in samples(text).items():
            expected[(name, tuple(sorted((*labels, ("worker", worker)))))] = value
    assert merged == expected


def test_the_daemon_hands_out_its_metrics_on_the_control_socket(tmp_path: Path) -> None:
    with Daemon(tmp_path, SECTIONS) as daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)
        finally:
            sip.close()
        # The same daemon asked twice, as if it were two workers, plus one that is not there.
        merged, silent = asyncio.run(
            gather(
                {
                    "0": tmp_path / "bridge.sock",
                    "1": tmp_path / "bridge.sock",
                    "2": tmp_path / "gone.sock",
                }
            )
        )
    assert silent == ["2"]
    got = samples(merged.decode())
    for worker in ("0", "1"):
        labels = (("client", "selfcheck"), ("outcome", "accepted"), ("protocol", "sip2"))
        key = ("patron_bridge_decisions_total", (*labels, ("worker", worker)))
        assert got[key] == 1
