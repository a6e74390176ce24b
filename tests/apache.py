"""Debian's Apache httpd, run by a test: foreground, non-root, loopback, its own config.

Used by the LDAP (mod_authnz_ldap) and federation (mod_auth_openidc, mod_auth_mellon) tests. The
caller writes `httpd.conf` (and any documents) into a fresh temporary directory; Apache is ready
when its port accepts a connection, and its error log is kept beside the daemon's logs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import require_tool
from tests.harness import LOG_FILES, Daemon

MODULES = Path("/usr/lib/apache2/modules")
BASE_MODULES = [
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
]


def httpd_head(root: Path, port: int, modules: list[tuple[str, str]], log_level: str) -> str:
    """The start of every test's httpd.conf: its own root, loopback port, logs and modules
    (the four every authenticating setup needs, then `modules`)."""
    loads = "\n".join(f"LoadModule {name} {MODULES / so}" for name, so in BASE_MODULES + modules)
    return f"""
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
LogLevel {log_level}
Mutex file:{root} default
DefaultRuntimeDir "{root}"
{loads}
"""


@contextlib.contextmanager
def running_apache(
    daemon: Daemon, port: int, write: Callable[[Path], None], prefix: str = "bridge-apache-"
) -> Iterator[str]:
    """Debian's Apache in the foreground on a loopback port, as `nobody` when we are root."""
    binary = require_tool("apache2")
    # A directory of its own that a non-root Apache can write (pytest's tmp is root-only).
    root = Path(tempfile.mkdtemp(prefix=prefix))
    write(root)
    user: str | None = None
    if os.geteuid() == 0:
        user = "nobody"
        nobody = pwd.getpwnam(user)
        for path in [root, *root.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    error_log = root / "error.log"
    LOG_FILES.append(error_log)
    proc = subprocess.Popen(
        [binary, "-d", str(root), "-f", str(root / "httpd.conf"), "-DFOREGROUND"],
        user=user,
        group="nogroup" if user else None,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it accepts connections (an event: the socket answers)
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"apache exited {proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        kept = daemon.dir / "apache-error.log"
        if error_log.exists():
            shutil.copy(error_log, kept)
            LOG_FILES.append(kept)
        shutil.rmtree(root, ignore_errors=True)
