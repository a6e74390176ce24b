"""Fixtures for the HTTP ILS connectors: each vendor's double served on loopback, and the
connector opened the way the daemon opens it. Every answer a double gave in a test is checked
against the schema we wrote from the vendor's contract when the test ends."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Kind:
    """One connector under test: its plugin, its double, the double's schemas, and the
    `[store]` settings that point the connector at a served double."""

    plugin: str
    double: Callable[[], Any]
    schemas: dict[str, dict[int, Any]]
    settings: Callable[[Any, str], dict[str, Any]]


KINDS = {
    "koha": Kind(
        "koha-rest",
        koha_double.KohaDouble,
        koha_double.SCHEMAS,
        lambda d, url: {"base_url": url, "client_id": d.client_id, "secret": d.client_secret},
    ),
    "folio": Kind(
        "folio",
        folio_double.FolioDouble,
        folio_double.SCHEMAS,
        lambda d, url: {
            "base_url": url,
            "tenant": folio_double.TENANT,
            "username": d.username,
            "password": d.password,
        },
    ),
    "sierra": Kind(
        "sierra",
        sierra_double.SierraDouble,
        sierra_double.SCHEMAS,
        lambda d, url: {
            "base_url": url + sierra_double.PREFIX,
            "key": d.key,
            "secret": d.secret,
            "patron_types": {"1": "ADULT"},
        },
    ),
    "polaris": Kind(
        "polaris",
        polaris_double.PolarisDouble,
        polaris_double.SCHEMAS,
        lambda d, url: {
            "base_url": url + polaris_double.PREFIX,
            "access_id": d.access_id,
            "api_key": d.key,
            "staff_domain": d.staff_domain,
            "staff_user": d.staff_user,
            "password": d.staff_password,
            "patron_codes": {"1": "ADULT"},
        },
    ),
    "alma": Kind(
        "alma",
        alma_double.AlmaDouble,
        alma_double.SCHEMAS,
        lambda d, url: {"base_url": url, "api_key": d.key},
    ),
    "symphony": Kind(
        "symphony",
        symphony_double.SymphonyDouble,
        symphony_double.SCHEMAS,
        lambda d, url: {
            "base_url": url,
            "client_id": d.client_id,
            "user": d.staff_user,
            "password": d.staff_password,
        },
    ),
    "evergreen": Kind(
        "evergreen-http",
        evergreen_double.EvergreenDouble,
        evergreen_double.SCHEMAS,
        lambda d, url: {"base_url": url, "staff_user": d.staff_user, "password": d.staff_password},
    ),
}


def settings_for(kind: str, double: Any, url: str, **more: Any) -> dict[str, Any]:
    """The settings the tests use: a short deadline, and a breaker that stays out of the way
    unless a test asks for it."""
    return {
        **KINDS[kind].settings(double, url),
        "request_timeout": 2.0,
        "breaker_failures": 100,
        **more,
    }


async def open_kind(kind: str, pair: tuple[Any, Served], tmp_path: Path, **more: Any) -> Any:
    """A second store on the same double (the caller closes it)."""
    double, served = pair
    settings = settings_for(kind, double, served.url, **more)
    return await open_plugin(KINDS[kind].plugin, settings, CountingHasher(), tmp_path)


def _fixtures(kind: str) -> tuple[Any, Any]:
    """The pair of fixtures each connector's tests use: `<kind>` (the double, served) and
    `<kind>_store` (the connector opened on it)."""

    @pytest.fixture(name=kind)
    def served() -> Iterator[tuple[Any, Served]]:
        yield from serving(KINDS[kind].double(), KINDS[kind].schemas)

    @pytest.fixture(name=f"{kind}_store")
    async def store(
        request: pytest.FixtureRequest, hasher: CountingHasher, tmp_path: Path
    ) -> AsyncIterator[Any]:
        double, served_double = request.getfixturevalue(kind)
        settings = settings_for(kind, double, served_double.url)
        async with opened(KINDS[kind].plugin, settings, hasher, tmp_path) as opened_store:
            yield opened_store

    return served, store


koha, koha_store = _fixtures("koha")
folio, folio_store = _fixtures("folio")
sierra, sierra_store = _fixtures("sierra")
polaris, polaris_store = _fixtures("polaris")
alma, alma_store = _fixtures("alma")
symphony, symphony_store = _fixtures("symphony")
evergreen, evergreen_store = _fixtures("evergreen")
koha_settings = functools.partial(settings_for, "koha")
folio_settings = functools.partial(settings_for, "folio")
sierra_settings = functools.partial(settings_for, "sierra")
polaris_settings = functools.partial(settings_for, "polaris")
alma_settings = functools.partial(settings_for, "alma")
symphony_settings = functools.partial(settings_for, "symphony")
evergreen_settings = functools.partial(settings_for, "evergreen")


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
    fixture = f"{request.param.split('-')[0]}_store"  # koha-rest → koha_store
    yield Opened(request.param, request.getfixturevalue(fixture))
