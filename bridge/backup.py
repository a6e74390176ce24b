"""`patron-bridge backup FILE` and `restore FILE` for the embedded SQLite store.

Backup uses SQLite's online backup API in one step: it reads one consistent snapshot of the
database (a read transaction; in WAL mode the daemon's writers are not blocked), so a backup
taken while the daemon serves and patrons change PINs holds every patron as of one instant.
The copy is written to a temporary file created 0600 beside FILE, switched to a single-file
journal, checked with `PRAGMA integrity_check`, synced and renamed into place: FILE is either
absent or complete.

Restore refuses while a daemon holds the instance lock, and holds that lock itself while it
works, so a daemon cannot start half-way. It checks the backup first (integrity, a patrons
table, a schema this version knows), keeps the current database as `PATH.pre-restore`, then
copies the backup in with the same backup API, which writes through SQLite's own pager (a
leftover `-wal` of the old file can never be replayed over the new one).

The pepper is not in the database: a backup is only useful with the same `security.pepper_file`
(kept apart, see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Config
from bridge.runtime.instance import AlreadyRunning, InstanceLock, lock_path


class BackupError(Exception):
    """One line: why the backup or restore was refused or failed."""


@dataclass(frozen=True, slots=True)
class Result:
    path: Path
    patrons: int
    schema: int


def sqlite_path(config: Config) -> Path:
    """The configured SQLite file; BackupError for any other store."""
    from bridge.app import store_settings

    if config.store_plugin != "sqlite":
        raise BackupError(
            f"backup and restore work on the sqlite store; the {config.store_plugin} store is "
            "backed up with its database's own tools (pg_dump: see docs/operations.md)"
        )
    _, settings = store_settings(config)
    return config.path(settings.path).resolve()


def _describe(conn: sqlite3.Connection, what: str) -> tuple[int, int]:
    """(patrons, schema version) after checking the file is a sound bridge database."""
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()
        if check is None or check[0] != "ok":
            raise BackupError(f"{what}: integrity check failed")
        schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        patrons = int(conn.execute("SELECT count(*) FROM patrons").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what}: not a patron-bridge SQLite database ({exc})") from None
    return patrons, schema


def backup(config: Config, dest: Path, *, force: bool = False) -> Result:
    source = sqlite_path(config)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists (give --force to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        try:
            src = sqlite3.connect(source, timeout=30)
            try:
                dst = sqlite3.connect(temporary)
                try:
                    src.backup(dst)  # pages=-1: the whole database from one read transaction
                    dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                    patrons, schema = _describe(dst, str(dest))
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.Error as exc:
            raise BackupError(f"backup failed: {exc}") from None
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return Result(dest, patrons, schema)


def restore(config: Config, backup_file: Path, known_schema: int) -> Result:
    target = sqlite_path(config)
    if not backup_file.is_file():
        raise BackupError(f"no backup at {backup_file}")
    lock = InstanceLock(lock_path(config.path(config.control.socket)))
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        who = f"pid {exc.pid}" if exc.pid is not None else f"lock {exc.path}"
        raise BackupError(f"the daemon is running ({who}): stop it before a restore") from None
    try:
        src = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            patrons, schema = _describe(src, str(backup_file))
            if schema > known_schema:
                raise BackupError(
                    f"{backup_file}: schema version {schema} is newer than this version knows "
                    f"({known_schema}): restore it with the version that made it"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                backup(config, target.with_name(target.name + ".pre-restore"), force=True)
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = WAL")
            finally:
                dst.close()
            os.chmod(target, 0o600)
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"restore failed: {exc}") from None
    finally:
        lock.release()
    return Result(target, patrons, schema)
