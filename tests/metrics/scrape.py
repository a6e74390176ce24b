"""Scrape a daemon's metrics listener with httpx and parse it with prometheus-client's parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.harness import Daemon


@dataclass
class Scrape:
    samples: list[Sample]
    families: dict[str, str]  # family name → type

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample named `name` whose labels include `labels`, or None."""
        found = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def base_url(daemon: Daemon) -> str:
    host, port = daemon.address("metrics")
    return f"http://{host}:{port}"


def scrape(daemon: Daemon) -> Scrape:
    reply = httpx.get(f"{base_url(daemon)}/metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(reply.text))
    return Scrape([s for f in families for s in f.samples], {f.name: f.type for f in families})
