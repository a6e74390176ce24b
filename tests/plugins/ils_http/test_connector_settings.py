"""Each HTTP connector's `[store]` keys are checked at start: one table, one test.

Per connector: a valid minimal table, the default one key must have in it, and the mistakes
that must stop the daemon (each with the word its error names).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from plugins.alma import AlmaSettings
from plugins.evergreen_http import EvergreenSettings
from plugins.folio import FolioSettings
from plugins.polaris import PolarisSettings
from plugins.sierra import SierraSettings
from plugins.symphony import SymphonySettings

Mistakes = list[tuple[dict[str, Any], str]]  # (a mistake, the word its error names)
Table = tuple[type[Any], dict[str, Any], tuple[str, Any], Mistakes]  # type, valid, default
TABLES: dict[str, Table] = {
    "folio": (
        FolioSettings,
        {
            "base_url": "https://okapi.example.org",
            "tenant": "diku",
            "username": "u",
            "password": "p",
        },
        ("identifier", "barcode"),
        [
            ({"tenant": ""}, "tenant"),
            ({"tenant": "Bad Tenant"}, "tenant"),
            ({"username": ""}, "username"),
            ({"password": ""}, "password"),
            ({"base_url": "http://folio.example.org"}, "https"),
            ({"identifier": "email"}, "identifier"),
            ({"blocks": ["everything"]}, "blocks"),
            ({"login": "oauth"}, "login"),
        ],
    ),
    "sierra": (
        SierraSettings,
        {"base_url": "https://sierra.example.org/iii/sierra-api", "key": "k", "secret": "s"},
        ("case_sensitive", False),
        [
            ({"key": ""}, "key"),
            ({"secret": ""}, "secret"),
            ({"base_url": "http://sierra.example.org/iii/sierra-api"}, "https"),
            ({"patron_types": {"1": 2}}, "patron_types"),
        ],
    ),
    "polaris": (
        PolarisSettings,
        {
            "base_url": "https://polaris.example.org/PAPIService/REST",
            "access_id": "a",
            "api_key": "k",
        },
        ("org_id", 1),
        [
            ({"access_id": ""}, "access_id"),
            ({"api_key": ""}, "api_key"),
            ({"staff_user": "u", "password": ""}, "staff_user"),
            ({"base_url": "http://polaris.example.org/PAPIService/REST"}, "https"),
            ({"date_header": "X-Date"}, "date_header"),
            ({"lang_id": "english"}, "lang_id"),
        ],
    ),
    "alma": (
        AlmaSettings,
        {"base_url": "https://api-eu.hosted.exlibrisgroup.com", "api_key": "k"},
        ("api_key_in", "header"),
        [
            ({"api_key": ""}, "api_key"),
            ({"api_key_in": "cookie"}, "api_key_in"),
            ({"base_url": "http://api-eu.hosted.exlibrisgroup.com"}, "https"),
        ],
    ),
    "symphony": (
        SymphonySettings,
        {
            "base_url": "https://ils.example.org/ilsws",
            "client_id": "c",
            "user": "u",
            "password": "p",
        },
        ("ok_standings", ("OK",)),
        [
            ({"client_id": ""}, "client_id"),
            ({"user": ""}, "user and password"),
            ({"password": ""}, "user and password"),
            ({"base_url": "http://ils.example.org/ilsws"}, "https"),
            ({"profiles": {"ADULT": 1}}, "profiles"),
        ],
    ),
    "evergreen": (
        EvergreenSettings,
        {"base_url": "https://eg.example.org"},
        ("identifier", "barcode"),
        [
            ({"base_url": "http://eg.example.org"}, "https"),
            ({"staff_user": "s"}, "staff_user"),
            ({"gateway_path": "osrf-gateway-v1"}, "absolute"),
            ({"idl_path": "/reports/fm_IDL.xml?class=au"}, "absolute"),
            ({"identifier": "email"}, "identifier"),
            ({"profiles": {"ADULT": 2}}, "profiles"),
        ],
    ),
}
CASES = [
    pytest.param(kind, more, message, id=f"{kind}-{message}-{i}")
    for kind, (_, _, _, mistakes) in TABLES.items()
    for i, (more, message) in enumerate(mistakes)
]


@pytest.mark.parametrize(("kind", "more", "message"), CASES)
def test_settings_are_validated(kind: str, more: dict[str, Any], message: str) -> None:
    type_, valid, (key, default), _ = TABLES[kind]
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert({**valid, **more}, type_)
    assert getattr(msgspec.convert(valid, type_), key) == default
