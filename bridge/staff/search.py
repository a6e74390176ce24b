"""Find a card at the desk: an exact barcode (a scanner types it and Enter), an email address,
or a name. Results are capped (`[staff] search_results`); an empty query finds nothing, so the
desk never lists every patron. Name search uses the store's optional
`search_by_name(text, limit)` where the store has one; otherwise only barcode and email work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bridge.core.auth import valid_barcode
from bridge.core.patron import Patron

if TYPE_CHECKING:
    from bridge.staff.state import Desk

MIN_NAME = 2  # one letter would page through the whole catalogue of patrons


async def find(desk: Desk, query: str) -> tuple[Patron | None, list[Patron]]:
    """(the card when the query is its barcode, else a short list of candidates)."""
    auth = desk.authenticator
    limit = desk.settings.search_results
    query = query.strip()
    if not query:
        return None, []
    if valid_barcode(query):
        patron = await auth.lookup(query)
        if patron is not None:
            return patron, []
    if "@" in query:
        return None, (await auth.lookup_by_email(query))[:limit]
    search: Callable[[str, int], Awaitable[list[Patron]]] | None = getattr(
        auth.store, "search_by_name", None
    )
    if search is None or len(query) < MIN_NAME:
        return None, []
    return None, (await search(query, limit))[:limit]


def name_search_available(desk: Desk) -> bool:
    return getattr(desk.authenticator.store, "search_by_name", None) is not None
