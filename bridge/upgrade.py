"""`patron-bridge migrate --check`: are schema migrations pending for the configured store?

The daemon applies pending migrations when it opens its store, so an upgrade needs no separate
step; the check tells an operator (or a package's upgrade script) before the restart whether
this start will change the schema, i.e. whether a backup is due and whether rolling back the
program later also means restoring that backup. It never changes anything: it reads the
schema version without opening the store (which would migrate).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bridge.config import Config


@dataclass(frozen=True, slots=True)
class SchemaState:
    store: str
    current: int | None  # None: no database yet (created at the first start)
    latest: int | None  # None: the store keeps no schema of its own (an ILS's database)

    @property
    def pending(self) -> int:
        if self.latest is None:
            return 0
        return self.latest - (self.current or 0)


async def schema_state(config: Config) -> SchemaState:
    from bridge.app import store_settings

    plugin, settings = store_settings(config)
    if plugin.name == "sqlite":
        from plugins.sqlite import MIGRATIONS as SQLITE

        path = config.path(settings.path)
        if not path.is_file():
            return SchemaState("sqlite", None, len(SQLITE))
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
        return SchemaState("sqlite", current, len(SQLITE))
    if plugin.name == "postgres":
        import psycopg

        from plugins.postgres import MIGRATIONS as POSTGRES
        from plugins.postgres import conninfo

        async with await psycopg.AsyncConnection.connect(
            conninfo(settings, config.base_dir), connect_timeout=10
        ) as pg:
            cur = await pg.execute("SELECT to_regclass('patron_bridge_migrations') IS NOT NULL")
            row = await cur.fetchone()
            current = 0
            if row and row[0]:
                cur = await pg.execute(
                    "SELECT coalesce(max(version), 0) FROM patron_bridge_migrations"
                )
                found = await cur.fetchone()
                current = int(found[0]) if found else 0
        return SchemaState("postgres", current, len(POSTGRES))
    return SchemaState(plugin.name, None, None)
