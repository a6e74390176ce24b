"""Fixtures for the HTTP ILS connectors: each vendor's double served on loopback, and the
connector opened the way the daemon opens it. Every answer a double gave in a test is checked
against the schema we wrote from the vendor's contract when the test ends."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from starlette.applications import Starlette

from tests.plugins.conftest import CountingHasher, Opened, open_plugin
from tests.plugins.ils_http import (
    alma_double,
    evergreen_double,
    folio_double,
    koha_double,
    polaris_double,
    sierra_double,
    symphony_double,
)
from tests.plugins.ils_http.schema import check
from tests.plugins.ils_http.serve import Served


def schema_problems(responses: Sequence[Any], schemas: dict[str, dict[int, Any]]) -> list[str]:
    """Every non-fault answer: a status the contract lists for its route, a body that fits."""
    problems = []
    for r in responses:
        if r.fault:
            continue
        allowed = schemas[r.route]
        if r.status not in allowed:
            problems.append(f"{r.route}: status {r.status} not in the contract")
            continue
        schema = allowed[r.status]
        if schema is not None:
            problems.extend(f"{r.route} {r.status}: {p}" for p in check(r.body, schema))
    return problems


class Double(Protocol):
    """What every vendor double offers the fixtures: its app, its record of answers, a latch."""

    @property
    def responses(self) -> Sequence[Any]: ...

    @property
    def release(self) -> threading.Event: ...

    def app(self) -> Starlette: ...


D = TypeVar("D", bound=Double)


def serving(double: D, schemas: dict[str, dict[int, Any]]) -> Iterator[tuple[D, Served]]:
    """A double served on loopback for one test; after it, every answer checked by its schema."""
    served = Served(double.app()).start()
    try:
        yield double, served
    finally:
        double.release.set()
        served.stop()
    assert not schema_problems(double.responses, schemas)


@contextlib.asynccontextmanager
async def opened(
    plugin: str, settings: dict[str, Any], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    """The connector opened as the daemon opens it, and closed after the test."""
    store = await open_plugin(plugin, settings, hasher, tmp_path)
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture
def koha() -> Iterator[tuple[koha_double.KohaDouble, Served]]:
    yield from serving(koha_double.KohaDouble(), koha_double.SCHEMAS)


def koha_settings(double: koha_double.KohaDouble, url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "client_id": double.client_id,
        "secret": double.client_secret,
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def koha_store(
    koha: tuple[koha_double.KohaDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = koha
    async with opened("koha-rest", koha_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def folio() -> Iterator[tuple[folio_double.FolioDouble, Served]]:
    yield from serving(folio_double.FolioDouble(), folio_double.SCHEMAS)


def folio_settings(double: folio_double.FolioDouble, url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "tenant": folio_double.TENANT,
        "username": double.username,
        "password": double.password,
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def folio_store(
    folio: tuple[folio_double.FolioDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = folio
    async with opened("folio", folio_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def sierra() -> Iterator[tuple[sierra_double.SierraDouble, Served]]:
    yield from serving(sierra_double.SierraDouble(), sierra_double.SCHEMAS)


def sierra_settings(double: sierra_double.SierraDouble, url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url + sierra_double.PREFIX,
        "key": double.key,
        "secret": double.secret,
        "patron_types": {"1": "ADULT"},
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def sierra_store(
    sierra: tuple[sierra_double.SierraDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = sierra
    async with opened("sierra", sierra_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def polaris() -> Iterator[tuple[polaris_double.PolarisDouble, Served]]:
    yield from serving(polaris_double.PolarisDouble(), polaris_double.SCHEMAS)


def polaris_settings(double: polaris_double.PolarisDouble, url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url + polaris_double.PREFIX,
        "access_id": double.access_id,
        "api_key": double.key,
        "staff_domain": double.staff_domain,
        "staff_user": double.staff_user,
        "password": double.staff_password,
        "patron_codes": {"1": "ADULT"},
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def polaris_store(
    polaris: tuple[polaris_double.PolarisDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = polaris
    async with opened("polaris", polaris_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def alma() -> Iterator[tuple[alma_double.AlmaDouble, Served]]:
    yield from serving(alma_double.AlmaDouble(), alma_double.SCHEMAS)


def alma_settings(double: alma_double.AlmaDouble, url: str, **more: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "api_key": double.key,
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def alma_store(
    alma: tuple[alma_double.AlmaDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = alma
    async with opened("alma", alma_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def symphony() -> Iterator[tuple[symphony_double.SymphonyDouble, Served]]:
    yield from serving(symphony_double.SymphonyDouble(), symphony_double.SCHEMAS)


def symphony_settings(
    double: symphony_double.SymphonyDouble, url: str, **more: Any
) -> dict[str, Any]:
    return {
        "base_url": url,
        "client_id": double.client_id,
        "user": double.staff_user,
        "password": double.staff_password,
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def symphony_store(
    symphony: tuple[symphony_double.SymphonyDouble, Served], hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Any]:
    double, served = symphony
    async with opened("symphony", symphony_settings(double, served.url), hasher, tmp_path) as store:
        yield store


@pytest.fixture
def evergreen() -> Iterator[tuple[evergreen_double.EvergreenDouble, Served]]:
    yield from serving(evergreen_double.EvergreenDouble(), evergreen_double.SCHEMAS)


def evergreen_settings(
    double: evergreen_double.EvergreenDouble, url: str, **more: Any
) -> dict[str, Any]:
    return {
        "base_url": url,
        "staff_user": double.staff_user,
        "password": double.staff_password,
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


@pytest.fixture
async def evergreen_store(
    evergreen: tuple[evergreen_double.EvergreenDouble, Served],
    hasher: CountingHasher,
    tmp_path: Path,
) -> AsyncIterator[Any]:
    double, served = evergreen
    settings = evergreen_settings(double, served.url)
    async with opened("evergreen-http", settings, hasher, tmp_path) as store:
        yield store


NOT_SEARCHABLE = {
    "evergreen-http": "the evergreen-http connector looks patrons up by barcode only",
    "symphony": "the symphony connector looks patrons up by barcode only (a documented limit)",
    "alma": "the alma connector looks users up by identifier only (a documented limit)",
    "sierra": "Sierra's find answers one patron per e-mail (a documented limit)",
    "polaris": "the polaris connector looks patrons up by barcode only (a documented limit)",
}


@pytest.fixture(
    params=["koha-rest", "folio", "sierra", "polaris", "alma", "symphony", "evergreen-http"]
)
def any_store(request: pytest.FixtureRequest) -> Iterator[Opened]:
    """The shared store contract (tests/plugins/test_contract.py) over each HTTP connector."""
    if request.param in NOT_SEARCHABLE and request.node.originalname == (
        "test_lookup_by_email_and_record_id"
    ):
        pytest.skip(NOT_SEARCHABLE[request.param])
    fixture = f"{request.param.split('-')[0]}_store"
    yield Opened(request.param, request.getfixturevalue(fixture))
