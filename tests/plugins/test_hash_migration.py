"""Moving a library's patrons into the bridge's own store without knowing anyone's PIN.

Each ILS's export query (the exact text docs/stores.md gives librarians) runs against a database
shaped like that ILS; `patron-bridge patron import` loads the CSV into sqlite or postgres; the
first successful login verifies the ILS's hash and re-hashes the PIN into the bridge's peppered
format (the authenticator calls `change_pin` when `needs_rehash`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import pty
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from bridge.core.patron import Outcome
from bridge.core.pin import KdfParams, PinHasher, read_or_create_pepper
from bridge.core.secret import Secret
from tests import harness
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import ils_fixtures, servers
from tests.plugins.conftest import authenticator, ctx, open_plugin, pg_settings
from tests.plugins.seed import ACTIVE, SEED

DOCS = Path(__file__).resolve().parents[2] / "docs" / "stores.md"

# The export queries, verbatim as in docs/stores.md (a test below keeps them identical).
KOHA_EXPORT = """\
SELECT b.cardnumber AS barcode,
       CONCAT_WS(', ', b.surname, b.firstname) AS name,
       COALESCE(b.email, '') AS email,
       COALESCE(DATE_FORMAT(NULLIF(b.dateexpiry, '0000-00-00'), '%Y-%m-%d'), '') AS expires,
       b.categorycode AS category,
       b.branchcode AS home_library,
       b.borrowernumber AS record_id,
       CASE WHEN b.lost = 1 THEN 'card reported lost'
            WHEN b.debarred > CURDATE() THEN 'restricted'
            ELSE '' END AS blocked,
       CAST(GREATEST(COALESCE((SELECT SUM(a.amountoutstanding) FROM accountlines a
                               WHERE a.borrowernumber = b.borrowernumber), 0), 0)
            AS DECIMAL(12,2)) AS fines,
       CASE WHEN b.password IS NULL OR b.password IN ('', '!') THEN ''
            WHEN b.password LIKE '$2%' THEN b.password
            ELSE CONCAT('{MD5}', b.password) END AS pin_hash
  FROM borrowers b
 WHERE b.cardnumber IS NOT NULL AND b.cardnumber <> ''"""

EVERGREEN_EXPORT = """\
SELECT c.barcode,
       concat_ws(', ', u.family_name, u.first_given_name) AS name,
       coalesce(u.email, '') AS email,
       to_char(u.expire_date, 'YYYY-MM-DD') AS expires,
       coalesce(g.name, '') AS category,
       coalesce(o.shortname, '') AS home_library,
       u.id AS record_id,
       CASE WHEN u.barred THEN 'barred'
            WHEN NOT u.active THEN 'account inactive'
            WHEN NOT c.active THEN 'card inactive'
            ELSE '' END AS blocked,
       greatest(coalesce(s.balance_owed, 0), 0)::numeric(12,2) AS fines,
       CASE WHEN p.salt IS NOT NULL THEN '$evergreen$' || p.salt || '$' || p.passwd
            WHEN length(u.passwd) = 32 AND u.passwd <> md5('') THEN '{MD5}' || lower(u.passwd)
            ELSE '' END AS pin_hash
  FROM actor.usr u
  JOIN actor.card c ON c.id = u.card
  LEFT JOIN permission.grp_tree g ON g.id = u.profile
  LEFT JOIN actor.org_unit o ON o.id = u.home_ou
  LEFT JOIN actor.passwd p ON p.usr = u.id AND p.passwd_type = 'main'
  LEFT JOIN money.open_usr_summary s ON s.usr = u.id
 WHERE NOT u.deleted"""

FOLIO_EXPORT = """\
SELECT u.jsonb->>'barcode' AS barcode,
       concat_ws(', ', u.jsonb->'personal'->>'lastName',
                 u.jsonb->'personal'->>'firstName') AS name,
       coalesce(u.jsonb->'personal'->>'email', '') AS email,
       coalesce(left(u.jsonb->>'expirationDate', 10), '') AS expires,
       coalesce(g.jsonb->>'group', '') AS category,
       u.id AS record_id,
       CASE WHEN (u.jsonb->>'active')::boolean THEN '' ELSE 'inactive' END AS blocked,
       CASE WHEN p.jsonb->>'pin' IS NULL THEN ''
            ELSE '$pbkdf2-sha512$150000$'
                 || encode(convert_to(u.id::text, 'UTF8'), 'base64') || '$'
                 || encode(decode(p.jsonb->>'pin', 'hex'), 'base64') END AS pin_hash
  FROM diku_mod_users.users u
  LEFT JOIN diku_mod_users.groups g ON g.id = (u.jsonb->>'patronGroup')::uuid
  LEFT JOIN diku_mod_users.patronpin p ON p.id = u.id
 WHERE u.jsonb->>'barcode' IS NOT NULL"""

SQLITE_EXPORT = """\
SELECT barcode, record_id, name, coalesce(email, '') AS email, category,
       coalesce(expires, '') AS expires,
       CASE WHEN blocked THEN coalesce(blocked_reason, 'blocked') ELSE '' END AS blocked, fines,
       coalesce(home_library, '') AS home_library, coalesce(pin_hash, '') AS pin_hash
  FROM patrons"""

FOLIO_USER = ("29000000000041", "Folio", "Flo")


def folio_pin(pin: str, user_id: str) -> str:
    """mod-users PatronPinService.derivePin: PBKDF2WithHmacSHA512(pin, userId bytes, 150000,
    64 bits), printed as upper-case hex."""
    return hashlib.pbkdf2_hmac("sha512", pin.encode(), user_id.encode(), 150000, 8).hex().upper()


def build_folio(dbname: str) -> None:
    """mod-users' tables as RMB keeps them: `(id uuid, jsonb jsonb)` per record."""
    user_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    barcode, last, first = FOLIO_USER
    with servers.pg_admin(dbname) as admin:
        admin.execute("CREATE SCHEMA diku_mod_users")
        for table in ("users", "groups", "patronpin"):
            admin.execute(
                f"CREATE TABLE diku_mod_users.{table} (id uuid PRIMARY KEY, jsonb jsonb NOT NULL)"
            )
        admin.execute(
            "INSERT INTO diku_mod_users.groups VALUES (%s, jsonb_build_object('group', 'ADULT'))",
            (group_id,),
        )
        user = {
            "barcode": barcode,
            "active": True,
            "patronGroup": group_id,
            "expirationDate": "2099-12-31T23:59:59.000+00:00",
            "personal": {"lastName": last, "firstName": first, "email": "flo@example.org"},
        }
        admin.execute(
            "INSERT INTO diku_mod_users.users VALUES (%s, %s)",
            (user_id, Jsonb(user)),
        )
        admin.execute(
            "INSERT INTO diku_mod_users.patronpin VALUES (%s, jsonb_build_object('id', %s::text, "
            "'pin', %s::text))",
            (user_id, user_id, folio_pin(DEMO_PIN, user_id)),
        )


def pg_export_csv(dbname: str, query: str) -> str:
    with servers.pg_admin(dbname) as admin:
        out = io.BytesIO()
        with admin.cursor().copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER)") as copy:
            for chunk in copy:
                out.write(chunk)
    return out.getvalue().decode()


def koha_export_csv(dbname: str) -> str:
    admin = servers.mariadb_admin(dbname)
    try:
        with admin.cursor() as cur:
            cur.execute(KOHA_EXPORT)
            header = [d[0] for d in cur.description]
            rows = cur.fetchall()
    finally:
        admin.close()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(["" if v is None else str(v) for v in row] for row in rows)
    return out.getvalue()


@pytest.fixture(scope="module")
def exports() -> dict[str, tuple[str, str]]:
    """ILS name → (CSV text, barcode of a patron whose PIN is DEMO_PIN)."""
    found: dict[str, tuple[str, str]] = {}
    with servers.mariadb_database("pb_koha") as dbname:
        extra = ils_fixtures.build_koha(dbname, SEED)
        try:
            found["koha"] = (koha_export_csv(dbname), ACTIVE.barcode)
            found["koha-md5"] = (found["koha"][0], ils_fixtures.KOHA_MD5.barcode)
        finally:
            ils_fixtures.drop_koha_user(extra["user"])
    extra = {}
    try:
        with servers.pg_database("pb_eg") as dbname:
            extra = ils_fixtures.build_evergreen(dbname, SEED)
            found["evergreen"] = (pg_export_csv(dbname, EVERGREEN_EXPORT), ACTIVE.barcode)
    finally:
        if extra:
            ils_fixtures.drop_pg_role(extra["user"])
    with servers.pg_database("pb_folio") as dbname:
        build_folio(dbname)
        found["folio"] = (pg_export_csv(dbname, FOLIO_EXPORT), FOLIO_USER[0])
    return found


def store_section(kind: str, tmp: Path, dbname: str) -> str:
    if kind == "sqlite":
        return '[store]\nplugin = "sqlite"\npath = "patrons.db"\n'
    return (
        f'[store]\nplugin = "postgres"\nhost = "{servers.PG_HOST}"\nport = {servers.PG_PORT}\n'
        f'dbname = "{dbname}"\nuser = "postgres"\n'
    )


def stored_hash(kind: str, tmp: Path, dbname: str, barcode: str) -> str:
    if kind == "sqlite":
        with sqlite3.connect(tmp / "patrons.db") as conn:
            row = conn.execute("SELECT pin_hash FROM patrons WHERE barcode = ?", (barcode,))
            return str(row.fetchone()[0])
    with servers.pg_admin(dbname) as admin:
        found = admin.execute("SELECT pin_hash FROM patrons WHERE barcode = %s", (barcode,))
        return str(found.fetchone()[0])  # type: ignore[index]


async def open_store(kind: str, tmp: Path, dbname: str, hasher: PinHasher) -> Any:
    if kind == "sqlite":
        return await open_plugin("sqlite", {"path": str(tmp / "patrons.db")}, hasher, tmp)
    return await open_plugin("postgres", pg_settings(dbname), hasher, tmp)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("ils", ["koha", "koha-md5", "evergreen", "folio"])
async def test_import_then_rehash_on_login(
    kind: str, ils: str, exports: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    csv_text, barcode = exports[ils]
    (tmp_path / "export.csv").write_text(csv_text)
    databases = servers.pg_database() if kind == "postgres" else contextlib.nullcontext("")
    with databases as dbname:
        config = tmp_path / "bridge.toml"
        config.write_text(
            harness.base_config(tmp_path, store=store_section(kind, tmp_path, dbname))
        )
        result = harness.run_cli(config, "patron", "import", "export.csv")
        assert result.returncode == 0, result.stderr
        assert "imported" in result.stdout
        before = stored_hash(kind, tmp_path, dbname, barcode)
        assert not before.startswith("$argon2id$")

        # The daemon's hasher: the same pepper file and KDF as the config.
        pepper = read_or_create_pepper(tmp_path / "pepper.key")
        hasher = PinHasher(pepper, KdfParams(argon2_memory_kib=8192, argon2_iterations=1))
        store = await open_store(kind, tmp_path, dbname, hasher)
        try:
            auth = authenticator(store)
            wrong = await auth.authenticate(barcode, Secret(WRONG_PIN), ctx())
            assert wrong.outcome is Outcome.BAD_PIN
            assert stored_hash(kind, tmp_path, dbname, barcode) == before  # no rehash on failure
            decision = await auth.authenticate(barcode, Secret(DEMO_PIN), ctx())
            assert decision.outcome is Outcome.ACCEPTED, decision.reason
            await auth.aclose()  # the re-hash runs in the background; wait for it
            after = stored_hash(kind, tmp_path, dbname, barcode)
            assert after.startswith("$argon2id$") and after != before
            again = await store.verify_pin(barcode, Secret(DEMO_PIN))
            assert again.pin_ok and not again.needs_rehash
            assert not (await store.verify_pin(barcode, Secret(WRONG_PIN))).pin_ok
        finally:
            await store.aclose()
            hasher.close()


def test_exports_carry_standing(exports: dict[str, tuple[str, str]]) -> None:
    rows = {r["barcode"]: r for r in csv.DictReader(io.StringIO(exports["koha"][0]))}
    assert rows[ils_fixtures.KOHA_RESTRICTED.barcode]["blocked"] == ""  # only in debarments
    assert rows["29000000000013"]["blocked"] == "card reported lost"
    assert rows["29000000000014"]["fines"] == "25.00"
    assert rows["29000000000015"]["pin_hash"] == ""  # Koha's "!": no PIN
    assert rows[ils_fixtures.KOHA_MD5.barcode]["pin_hash"].startswith("{MD5}")
    eg = {r["barcode"]: r for r in csv.DictReader(io.StringIO(exports["evergreen"][0]))}
    assert ils_fixtures.EG_DELETED.barcode not in eg
    assert eg["29000000000013"]["blocked"] == "barred"
    assert eg[ils_fixtures.EG_CARD_INACTIVE.barcode]["blocked"] == "card inactive"
    assert eg["29000000000011"]["pin_hash"].startswith("$evergreen$$2a$10$")


def test_docs_quote_the_tested_queries() -> None:
    text = DOCS.read_text()
    for query in (KOHA_EXPORT, EVERGREEN_EXPORT, FOLIO_EXPORT, SQLITE_EXPORT):
        assert query in text


def test_import_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """A progress bar when stderr is a terminal (stdout keeps only the closing line)."""
    rows = ["barcode,name"] + [f"2920000000{i:04d},Row {i}" for i in range(450)]
    (tmp_path / "many.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "bridge.toml"
    with servers.pg_database() as dbname:
        config.write_text(
            harness.base_config(tmp_path, store=store_section("postgres", tmp_path, dbname))
        )
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "--config",
                str(config),
                "patron",
                "import",
                "many.csv",
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            cwd=tmp_path,
        )
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout, _ = proc.communicate(timeout=120)
        os.close(master)
        log = tmp_path / "cli.log"
        log.write_bytes(seen + stdout)
        harness.LOG_FILES.append(log)
        assert proc.returncode == 0, seen
        assert b"imported 450 patrons" in stdout
        assert b"] 450/450 rows" in seen  # the bar, drawn on the terminal only
        assert b"rows" not in stdout.split(b"imported", 1)[0]
        with servers.pg_admin(dbname) as admin:
            assert admin.execute("SELECT count(*) FROM patrons").fetchone() == (450,)


def test_unknown_hash_forms_are_refused_by_line(tmp_path: Path) -> None:
    """A pin_hash the bridge cannot verify would lock its patron out: the row is refused."""
    good = ils_fixtures.koha_bcrypt(DEMO_PIN)
    (tmp_path / "mixed.csv").write_text(
        f"barcode,name,pin_hash\n29300000000001,Good,{good}\n29300000000002,Bad,md5:abcdef\n"
    )
    config = tmp_path / "bridge.toml"
    config.write_text(harness.base_config(tmp_path, store=store_section("sqlite", tmp_path, "")))
    result = harness.run_cli(config, "patron", "import", "mixed.csv")
    assert result.returncode != 0
    assert "line 3: pin_hash: not a hash form" in result.stderr
    assert "abcdef" not in result.stderr  # never quotes the hash
    assert "imported 1 patrons (1 added" in result.stdout
    assert "skipped 1 bad rows" in result.stdout


async def test_sqlite_to_postgres_keeps_bridge_hashes(tmp_path: Path) -> None:
    """Moving from the SQLite store to postgres: the bridge's own hashes copy over as they are
    (same pepper), and verify without a re-hash."""
    config = tmp_path / "bridge.toml"
    config.write_text(harness.base_config(tmp_path))  # sqlite with the demo patrons
    shown = harness.run_cli(config, "patron", "show", harness.DEMO["active"])
    assert shown.returncode == 0, shown.stderr
    with sqlite3.connect(tmp_path / "patrons.db") as conn:
        cur = conn.execute(SQLITE_EXPORT)
        header = [d[0] for d in cur.description]
        rows = cur.fetchall()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    (tmp_path / "export.csv").write_text(out.getvalue())
    with servers.pg_database() as dbname:
        config.write_text(
            harness.base_config(tmp_path, store=store_section("postgres", tmp_path, dbname))
        )
        result = harness.run_cli(config, "patron", "import", "export.csv")
        assert result.returncode == 0, result.stderr
        pepper = read_or_create_pepper(tmp_path / "pepper.key")
        hasher = PinHasher(pepper, KdfParams(argon2_memory_kib=8192, argon2_iterations=1))
        store = await open_store("postgres", tmp_path, dbname, hasher)
        try:
            assert await store.count() == len(rows)
            check = await store.verify_pin(harness.DEMO["active"], Secret(DEMO_PIN))
            assert check.pin_ok and not check.needs_rehash
            blocked = await store.lookup(harness.DEMO["blocked"])
            assert blocked is not None and blocked.blocked
        finally:
            await store.aclose()
            hasher.close()
