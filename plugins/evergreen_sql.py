"""Read-only connector to Evergreen's PostgreSQL database.

For libraries that prefer the bridge to read Evergreen's tables over calling OpenSRF. The
bridge connects as a role with SELECT on the `actor`, `config`, `permission` and `money`
schemas and every session is read-only (`default_transaction_read_only`); PIN changes and
resets stay in Evergreen (capabilities say so).

One query per request joins `actor.card` (barcode, active) to `actor.usr` (names, email,
profile → `permission.grp_tree.name`, home_ou → `actor.org_unit.shortname`, active, barred,
deleted, expire_date), the main password row of `actor.passwd`, the live standing penalties
(`actor.usr_standing_penalty` → `config.standing_penalty`) and the open balance
(`money.open_usr_summary.balance_owed`).

PINs: Evergreen stores the main password as `passwd = crypt(md5(salt || md5(pin)), salt)` with
`salt = gen_salt('bf', 10)` (actor.passwd, `passwd_type = 'main'`). The bridge recomputes
that in its KDF pool (`$evergreen$<salt>$<crypt>` in `bridge.core.legacy_hashes`), so the PIN
never travels to the database. An unknown card costs one check of the same kind.

Users with no `main` row in actor.passwd (never migrated: Evergreen moves `actor.usr.passwd`,
the MD5 hex of the password, into actor.passwd only when the user next logs in, through
`actor.get_salt` → `actor.migrate_passwd`, which also empties `actor.usr.passwd`; bulk-loaded and
long-inactive patrons and Evergreen's own seed admin are in this state) are verified read-only
against `actor.usr.passwd` (evergreen-library-system/Evergreen
Open-ILS/src/sql/Pg/upgrade/0961.schema.password-storage.sql @ 5f9da3a). An empty value, or the
MD5 of the empty string, is "no password". The bridge does not migrate (it never writes); such
a check also runs one dummy bcrypt so it costs what a migrated user's does.

Standing, mapped to the bridge's patron record:
- deleted users: unknown (Evergreen refuses them as LOGIN_FAILED);
- `barred`, inactive user, inactive card: blocked (Evergreen answers PATRON_INACTIVE /
  PATRON_CARD_INACTIVE even to the right password);
- a live standing penalty whose `block_list` names one of `blocking_penalties` (default CIRC)
  and whose org unit is in the full path (ancestors and descendants) of the context org unit:
  blocked, with the penalty's label. This is the scoping of Evergreen's own circulation test
  (`action.item_user_circ_test`: `usp.org_unit IN (actor.org_unit_full_path(circ_ou))`); the
  context is `org_unit` (the library the bridge speaks for), else the patron's home library;
- `expire_date` → expiry (Evergreen itself lets expired patrons log in; the bridge's client
  policy decides);
- `money.open_usr_summary.balance_owed` → fines.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Annotated, Any

import bcrypt
import msgspec
import psycopg

from bridge.core.patron import Patron
from bridge.core.pin import PinHasher
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    NotSupported,
    StoreError,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    Verification,
    same_barcode,
)
from plugins.postgres import Conn, PgConnectSettings, PgPool, conninfo


class EvergreenSqlSettings(PgConnectSettings, frozen=True):
    dbname: str = "evergreen"
    # A live penalty blocks when its block_list names any of these (Evergreen's CIRC, HOLD,
    # RENEW, ...); penalties with no block_list are alerts and never block.
    blocking_penalties: tuple[str, ...] = ("CIRC",)
    # Evergreen's main-password bcrypt cost, used only for the dummy check on unknown cards.
    bcrypt_cost: Annotated[int, msgspec.Meta(ge=4, le=16)] = 10
    # The library the bridge speaks for (actor.org_unit.shortname): penalties count when set
    # at an org unit in its full path, as Evergreen's circulation rules count them. None: the
    # patron's home library.
    org_unit: str | None = None


# Every statement is a constant; values are always bound parameters.
_SELECT = """
SELECT u.id, c.barcode, u.family_name, u.first_given_name, u.pref_first_given_name, u.email,
       g.name, o.shortname, u.expire_date, u.active, c.active, u.barred,
       p.salt, p.passwd,
       (SELECT string_agg(sp.label, '; ' ORDER BY sp.id)
          FROM actor.usr_standing_penalty usp
          JOIN config.standing_penalty sp ON sp.id = usp.standing_penalty
         WHERE usp.usr = u.id
           AND (usp.stop_date IS NULL OR usp.stop_date > now())
           AND string_to_array(coalesce(sp.block_list, ''), '|') && %(blocking)s::text[]
           AND usp.org_unit IN (SELECT fp.id FROM actor.org_unit_full_path(
                                    coalesce(%(org)s::int, u.home_ou)) fp)
       ) AS penalties,
       coalesce((SELECT s.balance_owed FROM money.open_usr_summary s WHERE s.usr = u.id), 0),
       u.passwd
  FROM actor.card c
  JOIN actor.usr u ON u.id = c.usr
  LEFT JOIN permission.grp_tree g ON g.id = u.profile
  LEFT JOIN actor.org_unit o ON o.id = u.home_ou
  LEFT JOIN actor.passwd p ON p.usr = u.id AND p.passwd_type = 'main'
 WHERE NOT u.deleted
"""
_BY_BARCODE = _SELECT + " AND c.barcode = %(value)s"
# The user's current card (actor.usr.card) answers for lookups that do not name a card.
_BY_ID = _SELECT + " AND u.id = %(value)s AND c.id = u.card"
# evergreen.lowercase() is the expression Evergreen indexes e-mail by (actor_usr_email_idx).
_BY_EMAIL = (
    _SELECT
    + " AND evergreen.lowercase(u.email) = evergreen.lowercase(%(value)s) AND c.id = u.card"
    + " LIMIT 50"
)


_MD5_OF_NOTHING = hashlib.md5(b"", usedforsecurity=False).hexdigest()
_HEX = "0123456789abcdef"
_ORG_BY_SHORTNAME = "SELECT id FROM actor.org_unit WHERE shortname = %(value)s"


def evergreen_hash(salt: str | None, passwd: str | None, legacy: str | None = None) -> str | None:
    """The user's main password in the form the core hasher verifies, or None (no password):
    actor.passwd's `main` row, else (never migrated) actor.usr.passwd, Evergreen's MD5 hex of
    the password, unless it is empty or the MD5 of the empty string."""
    if salt and passwd:
        return f"$evergreen${salt}${passwd}"
    if salt or passwd:  # half a row: nothing Evergreen itself would accept
        return None
    legacy = (legacy or "").strip().lower()
    if len(legacy) != 32 or legacy.strip(_HEX) or legacy == _MD5_OF_NOTHING:
        return None
    return "{MD5}" + legacy


def to_patron(row: tuple[Any, ...], today: dt.date) -> Patron:
    (usr, barcode, family, first, preferred, email, profile, home, expire) = row[:9]
    user_active, card_active, barred, _salt, _passwd, penalties, balance = row[9:16]
    reason = None
    if barred:
        reason = "barred"
    elif not user_active:
        reason = "account inactive"
    elif not card_active:
        reason = "card inactive (replaced or lost)"
    elif penalties:
        reason = f"standing penalty: {penalties}"
    expires = expire.date() if isinstance(expire, dt.datetime) else expire
    return Patron(
        barcode=barcode,
        record_id=str(usr),
        name=", ".join(part for part in (family, preferred or first) if part),
        email=email or None,
        category=profile or "",
        expires=expires,
        blocked=reason is not None,
        blocked_reason=reason,
        fines=max(Decimal(balance), Decimal(0)).quantize(Decimal("0.01")),
        home_library=home,
    )


class EvergreenSqlStore:
    """Patrons and PIN checks straight from Evergreen's tables, read-only."""

    capabilities = frozenset({Capability.VERIFY, Capability.BY_EMAIL, Capability.BY_RECORD_ID})
    # `actor.card.barcode = %s` on text with a deterministic collation: exact, as Evergreen's
    # own lookup by barcode.
    canonical_barcode = staticmethod(same_barcode)

    def __init__(
        self, db: PgPool, settings: EvergreenSqlSettings, hasher: PinHasher, org: int | None = None
    ) -> None:
        self.db = db
        self.hasher = hasher
        self.blocking = list(settings.blocking_penalties)
        self.org = org  # actor.org_unit.id of `org_unit`; None: each patron's home library
        salt = bcrypt.gensalt(settings.bcrypt_cost, prefix=b"2a").decode()
        dummy = bcrypt.hashpw(b"no such card", salt.encode()).decode()
        self._dummy = f"$evergreen${salt}${dummy}"

    async def _fetch(self, query: str, value: Any, what: str) -> list[tuple[Any, ...]]:
        async def fetch(conn: Conn) -> list[tuple[Any, ...]]:
            params = {"value": value, "blocking": self.blocking, "org": self.org}
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        try:
            return await self.db.run(fetch, what)
        except psycopg.Error as exc:  # any other driver error, e.g. a value it cannot load
            raise StoreUnavailable(f"evergreen-sql: {what}: {type(exc).__name__}") from None

    def _patron(self, row: tuple[Any, ...], today: dt.date) -> Patron:
        """`to_patron`, with a row the mapping cannot read answered as "store unavailable"."""
        try:
            return to_patron(row, today)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise StoreUnavailable(
                f"evergreen-sql: unreadable row ({type(exc).__name__})"
            ) from None

    # -- Store ------------------------------------------------------------------------------
    async def lookup(self, barcode: str) -> Patron | None:
        rows = await self._fetch(_BY_BARCODE, barcode, "lookup")
        return self._patron(rows[0], dt.date.today()) if rows else None

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        rows = await self._fetch(_BY_BARCODE, barcode, "lookup")
        stored = evergreen_hash(rows[0][12], rows[0][13], rows[0][16]) if rows else None
        check = await self.hasher.verify(pin, stored or self._dummy)
        if stored is not None and stored.startswith("{MD5}"):
            # A never-migrated password is one MD5: add the bcrypt a migrated one costs, so the
            # answer's timing does not tell the two apart.
            await self.hasher.verify(pin, self._dummy)
        if not rows:
            return Verification(None, False)
        # Re-hashing is the owner's business: Evergreen keeps its own hashes.
        patron = self._patron(rows[0], dt.date.today())
        return Verification(patron, stored is not None and check.ok, needs_rehash=False)

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        raise NotSupported("evergreen-sql is read-only: change PINs in Evergreen")

    async def health(self) -> Health:
        return await self.db.health()

    async def aclose(self) -> None:
        await self.db.close()

    # -- SearchableStore --------------------------------------------------------------------
    async def lookup_by_email(self, email: str) -> list[Patron]:
        rows = await self._fetch(_BY_EMAIL, email, "lookup by email")
        today = dt.date.today()
        return [self._patron(r, today) for r in rows]

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        if not record_id.isdigit() or len(record_id) > 9:
            return None
        rows = await self._fetch(_BY_ID, int(record_id), "lookup by record id")
        return self._patron(rows[0], dt.date.today()) if rows else None


async def open_store(settings: EvergreenSqlSettings, services: StoreServices) -> EvergreenSqlStore:
    db = PgPool("evergreen-sql", settings, conninfo(settings, services.base_dir, read_only=True))
    await db.open()
    store = EvergreenSqlStore(db, settings, services.hasher)
    try:
        await store.health()
        if settings.org_unit is not None:
            store.org = await org_unit_id(store, settings.org_unit)
    except BaseException:
        await db.close()
        raise
    return store


async def org_unit_id(store: EvergreenSqlStore, shortname: str) -> int:
    """The id of the org unit `shortname` names; a name Evergreen does not know is a setup
    error, reported at start rather than silently widening or narrowing every penalty."""
    rows = await store._fetch(_ORG_BY_SHORTNAME, shortname, "org unit")
    if not rows:
        raise StoreError(f"evergreen-sql: org_unit {shortname!r} is no actor.org_unit shortname")
    return int(rows[0][0])


PLUGIN = StorePlugin(
    name="evergreen-sql",
    settings=EvergreenSqlSettings,
    open=open_store,
    description="Evergreen's PostgreSQL tables, read-only (PIN changes stay in Evergreen)",
)
