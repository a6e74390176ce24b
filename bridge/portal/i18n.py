"""Messages in the patron's language, and how the language is chosen.

Every string a page or an email shows lives in `locales/<lang>.json` under a key; templates and
code ask for keys, never for English text, so a library can add a language by adding one file.
The language comes from, in order: a `lang` query parameter (the switcher links), the `lang`
cookie it sets, the browser's Accept-Language, the configured default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from bridge.portal.settings import LANGUAGES, Language

LANG_COOKIE = "lang"


class MissingMessage(KeyError):
    """A key absent from a locale file (a bug; tests check every locale has every key)."""


def load_catalogs(package: str = "bridge.portal") -> dict[Language, dict[str, str]]:
    """Every language's messages from `<package>/locales` (the staff pages load theirs too)."""
    root = files(package).joinpath("locales")
    catalogs: dict[Language, dict[str, str]] = {}
    for lang in LANGUAGES:
        data: Any = json.loads(root.joinpath(f"{lang}.json").read_text(encoding="utf-8"))
        catalogs[lang] = {str(k): str(v) for k, v in data.items()}
    return catalogs


@dataclass(frozen=True, slots=True)
class Translator:
    """`t("key", name=...)` in one language; formatting uses str.format with named fields."""

    lang: Language
    catalog: dict[str, str]

    def __call__(self, key: str, /, **params: object) -> str:
        try:
            text = self.catalog[key]
        except KeyError:
            raise MissingMessage(f"{self.lang}: {key}") from None
        return text.format(**params) if params else text


def as_language(value: str | None) -> Language | None:
    if value is None:
        return None
    value = value.strip().lower()
    for lang in LANGUAGES:
        if value == lang:
            return lang
    return None


def from_accept_language(header: str) -> Language | None:
    """The best supported language in an Accept-Language header (`es-MX,es;q=0.9,en;q=0.5`)."""
    best: tuple[float, int, Language] | None = None
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        lang = as_language(tag.split("-", 1)[0])
        if lang is None or quality <= 0:
            continue
        # Higher quality wins; among equals, the earlier entry.
        candidate = (quality, -position, lang)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return None if best is None else best[2]


def choose(
    query: str | None, cookie: str | None, accept: str | None, default: Language
) -> Language:
    return (
        as_language(query)
        or as_language(cookie)
        or (from_accept_language(accept) if accept else None)
        or default
    )
