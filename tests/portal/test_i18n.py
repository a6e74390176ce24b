"""Language choice, and every message key in every locale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.portal import i18n
from bridge.portal.i18n import MissingMessage, Translator, load_catalogs

PORTAL = Path(__file__).resolve().parents[2] / "bridge" / "portal"


def test_every_locale_has_every_key_and_the_same_fields() -> None:
    catalogs = load_catalogs()
    english = catalogs["en"]
    field = re.compile(r"\{(\w+)\}")
    for lang, catalog in catalogs.items():
        assert set(catalog) == set(english), lang
        for key, text in catalog.items():
            assert set(field.findall(text)) == set(field.findall(english[key])), (lang, key)


def test_every_key_used_exists() -> None:
    used: set[str] = set()
    call = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']""")
    literal = re.compile(
        r"""["']((?:login|pin|policy|forgot|reset|csrf|error|account)\.[a-z_]+)["']"""
    )
    for path in [*PORTAL.glob("*.py"), *(PORTAL / "templates").glob("*.html")]:
        text = path.read_text()
        used |= set(call.findall(text)) | set(literal.findall(text))
    used |= {f"policy.{c}" for c in ("empty", "not_digits", "length", "repeating", "common")}
    used |= {"policy.same_as_old", "policy.other", "lang.en", "lang.es"}
    for lang, catalog in load_catalogs().items():
        missing = sorted(k for k in used if k not in catalog and not k.endswith(".html"))
        assert not missing, (lang, missing)


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "want"),
    [
        ("es", "en", "en", "es"),
        (None, "es", "en", "es"),
        ("fr", None, "es-MX,es;q=0.9", "es"),
        (None, None, "fr-FR, es;q=0.4, en;q=0.8", "en"),
        (None, None, "de, es;q=0", "en"),
        (None, None, "en;q=bad, es", "es"),
        (None, None, None, "en"),
    ],
)
def test_choose(query: str | None, cookie: str | None, accept: str | None, want: str) -> None:
    assert i18n.choose(query, cookie, accept, "en") == want


def test_missing_key_is_an_error() -> None:
    with pytest.raises(MissingMessage):
        Translator("en", {})("nope")
