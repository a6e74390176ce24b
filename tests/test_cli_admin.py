"""The admin's command line: help for every option, --version, messages that say what happened,
file modes of what the bridge creates, and what a terminal shows (under a real pseudo-terminal):
readable audit lines, `ready` once, what the first start created, the import's progress bar."""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ldap3 import Connection, Server

from bridge import __version__
from bridge.cli import build_parser
from bridge.importer import COLUMNS
from tests.harness import DEMO, DEMO_CSV, LOG_FILES, Daemon, base_config, run_cli
from tests.pins import DEMO_PIN

BASE_DN = "dc=library,dc=example"


def _parsers(
    parser: argparse.ArgumentParser, path: str = ""
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}".strip())
    return found


def test_every_option_of_every_verb_has_help() -> None:
    missing = [
        f"{path}: {action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_import_help_lists_the_columns(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path))
    shown = run_cli(config, "patron", "import", "--help")
    assert shown.returncode == 0
    for name, _ in COLUMNS:
        assert f"\n  {name} " in shown.stdout
    for option in ("--mode", "--dry-run", "--blank-clears", "--skip-bad-pins"):
        assert option in shown.stdout


def test_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == f"patron-bridge {__version__}"


def test_add_without_pin_says_there_is_none_and_staff_is_audited(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path))
    added = run_cli(config, "patron", "add", "21234000000801", "--name", "No Pin")
    assert added.returncode == 0, added.stderr
    assert "21234000000801 has no PIN yet" in added.stderr
    assert json.loads(added.stdout)["barcode"] == "21234000000801"
    cleared = run_cli(config, "lockout", "clear", "21234000000801", "--staff", "desk-12")
    assert cleared.returncode == 0, cleared.stderr
    assert '"actor":"desk-12"' in (tmp_path / "audit.log").read_text()


def test_cert_generate_writes_relative_to_the_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    config = conf / "bridge.toml"
    config.write_text(
        base_config(conf)
        + '\n[ldap]\nlisten = ["127.0.0.1:0"]\ntls_certificate = "../var/ldap.crt"\n'
        'tls_key = "../var/ldap.key"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = [sys.executable, "-m", "bridge", "--config", str(config), "cert", "generate"]
    made = subprocess.run(run, capture_output=True, text=True, cwd=elsewhere, timeout=60)
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "var" / "ldap.crt").exists() and (tmp_path / "var" / "ldap.key").exists()
    assert (tmp_path / "var" / "ldap.key").stat().st_mode & 0o777 == 0o600
    named = subprocess.run(
        [*run, "--cert", "tls/c.pem", "--key", "tls/k.pem"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
    )
    assert named.returncode == 0, named.stderr
    assert (conf / "tls" / "c.pem").exists() and not (elsewhere / "tls").exists()


def test_files_holding_hashes_are_private(tmp_path: Path) -> None:
    """A fresh directory tree: the bridge makes var/ 0700 and every secret-holding file 0600
    (the store with its -wal/-shm while the daemon runs, the throttle state, the pepper)."""
    store = (
        f'[store]\nplugin = "sqlite"\npath = "var/patrons.db"\ndemo = true\n'
        f'demo_file = "{DEMO_CSV}"\n'
    )
    daemon = Daemon(tmp_path, store=store)
    text = daemon.config.read_text()
    text = text.replace('pepper_file = "pepper.key"', 'pepper_file = "var/keys/pepper.key"')
    text = text.replace('path = "throttle.db"', 'path = "var/throttle.db"')
    daemon.config.write_text(text)
    old = os.umask(0o022)
    try:
        with daemon:
            var = tmp_path / "var"
            modes = {p.name: p.stat().st_mode & 0o777 for p in var.iterdir() if p.is_file()}
            assert {"patrons.db", "patrons.db-wal", "patrons.db-shm", "throttle.db"} <= set(modes)
            assert set(modes.values()) == {0o600}, modes
            assert var.stat().st_mode & 0o777 == 0o700
            assert (var / "keys").stat().st_mode & 0o777 == 0o700
            assert (var / "keys" / "pepper.key").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# -- at a terminal ----------------------------------------------------------------------------


class Pty:
    """A process whose stdin, stdout and stderr are one pseudo-terminal, as at a console."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""
        self.log = cwd / "tty.log"
        LOG_FILES.append(self.log)

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no {text!r}: {self.seen[-2000:]!r}"
            self._read()

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            chunk = b""
        self.seen += chunk
        return bool(chunk)

    def finish(self, timeout: float = 60) -> int:
        while self._read():
            pass
        code = self.proc.wait(timeout=timeout)
        os.close(self.master)
        self.log.write_bytes(self.seen)
        return code

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.finish()


def test_a_terminal_reads_one_style_ready_once_and_what_the_first_start_made(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        base_config(tmp_path).replace('destination = "audit.log"', 'destination = "stderr"')
        + f'\n[ldap]\nlisten = ["127.0.0.1:0"]\nlisten_tls = ["127.0.0.1:0"]\n'
        f'base_dn = "{BASE_DN}"\ntls_certificate = "ldap.crt"\ntls_key = "ldap.key"\n'
        "tls_generate = true\n"
    )
    term = Pty(tmp_path, "--config", str(config), "serve")
    try:
        term.expect("ldap_listening")
        term.expect("ready")
        text = term.seen.decode(errors="replace")
        address = text.split("ldap_listening", 1)[1].split("'", 2)[1]
        host, _, port = address.rpartition(":")
        conn = Connection(
            Server(host, int(port), get_info="NO_INFO"),
            user=f"uid={DEMO['active']},ou=patrons,{BASE_DN}",
            password=DEMO_PIN,
            raise_exceptions=False,
        )
        assert conn.bind()
        conn.unbind()
        term.expect("outcome=accepted")
    finally:
        assert term.stop() == 0
    text = term.seen.decode(errors="replace")
    for made in ("pepper_created", "demo_patrons_loaded", "ldap_certificate_created"):
        assert made in text
    assert text.count("ready") == 1  # the log's line; no JSON echo of it on stdout
    assert '{"timestamp"' not in text  # audit lines rendered like the others
    assert "protocol=ldap" in text


def test_import_at_a_terminal_draws_a_bar_under_the_error_lines(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path))
    csv = tmp_path / "p.csv"
    rows = "".join(f"2123400000{900 + i:04d},Patron {i}\n" for i in range(300))
    csv.write_text("barcode,name\n" + rows + "bad card,X\n" + "21234000009999,a,b\n")
    term = Pty(tmp_path, "--config", str(config), "patron", "import", str(csv))
    assert term.finish() == 1
    text = term.seen.decode(errors="replace")
    assert "line 302: barcode: missing or malformed" in text
    assert "line 303: more fields than the header names" in text
    assert "] 302/302 rows" in text or "] 302/" in text
    assert "imported 300 patrons" in text
    # each error line ends before the bar is drawn again
    for line in text.replace("\r\n", "\n").split("\n"):
        if ": line " in line:
            assert "[" not in line.split(": line ")[1]
