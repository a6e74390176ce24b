"""One exposition for a service of several worker processes (`[server] workers = N`).

Each worker keeps its own state (cache, KDF pool, connections, counters), and its collectors
read that state live, which prometheus-client's multiprocess mode cannot do (it only sums its
own mmap'd counters). So the service aggregates instead: every worker renders its exposition
on request (the control socket's `metrics` op), and the one metrics listener asks each worker
and merges the answers here, adding a `worker` label to every sample. One scrape then sees the
whole service; `sum without (worker) (...)` in PromQL gives the service's totals, and the
shipped alert rules and dashboard aggregate with `sum`/`max` already.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


def merge(parts: Iterable[tuple[str, str]]) -> bytes:
    """`parts`: (worker id, that worker's text exposition). The merged text exposition; a
    family's HELP and TYPE come from the first worker that has it."""
    families: dict[str, Metric] = {}
    for worker, text in parts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {**sample.labels, "worker": worker}
                merged.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(list(families.values())))
    return generate_latest(registry)


WORKER_DEADLINE = 5.0  # seconds a worker has to answer a scrape


async def ask_worker(path: Path) -> str | None:
    """One worker's exposition through its control socket, or None when it does not answer."""
    try:
        async with asyncio.timeout(WORKER_DEADLINE):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=16 * 1024 * 1024)
            try:
                writer.write(b'{"op": "metrics"}\n')
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError):
        return None
    try:
        reply = json.loads(line)
    except ValueError:
        return None
    text = reply.get("text") if isinstance(reply, dict) and reply.get("ok") else None
    return text if isinstance(text, str) else None


async def gather(workers: dict[str, Path]) -> tuple[bytes, list[str]]:
    """The merged exposition of every worker (worker id → its control socket), and the ids of
    those that did not answer (the supervisor's /readyz reports them)."""
    answers = await asyncio.gather(*(ask_worker(path) for path in workers.values()))
    parts = [(w, text) for w, text in zip(workers, answers, strict=True) if text is not None]
    silent = [w for w, text in zip(workers, answers, strict=True) if text is None]
    return merge(parts), silent
