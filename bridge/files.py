"""Private files and directories: what the bridge creates that holds hashes, tokens or keys.

The patron store (and its -wal/-shm), the throttle state, the pepper and the TLS key are created
mode 0600, and a directory the bridge creates for them mode 0700, whatever the process umask:
another local account must not read PIN hashes it could brute-force offline. Files and
directories that already exist keep the modes the admin gave them.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> None:
    """Create `path` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # another process made it meanwhile
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is masked by the umask


def create_private(path: Path) -> bool:
    """Create an empty file with mode 0600 unless it exists; True when it was created.

    SQLite then opens the file as it is, and gives its -wal and -shm files the same mode."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write a new file (never over an existing one) with mode 0600, synced to disk."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
