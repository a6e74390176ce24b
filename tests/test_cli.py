"""Every `patron-bridge` verb, with its exit codes: 0 ok, 1 refused, 2 usage or config error.
Each runs as a real process over a real SQLite store with the demo patrons; `pin set` at a
terminal runs under a pseudo-terminal."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import DEMO, LOG_FILES, UNKNOWN, base_config, cli_command, run_cli
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN

NEW_CARD = "21234000000100"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    path = tmp / "bridge.toml"
    path.write_text(base_config(tmp))
    LOG_FILES.append(tmp / "audit.log")
    return path


def cli(config: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(config, *args, input=input)


def verify(config: Path, barcode: str, pin: str) -> bool:
    """Ask the store itself (through the core) whether barcode/PIN verifies."""
    code = (
        "import asyncio,sys\n"
        "from bridge.app import open_core\nfrom bridge.config import load\n"
        "from bridge.core.secret import Secret\n"
        "async def main():\n"
        "    core = await open_core(load(sys.argv[1]))\n"
        "    try:\n"
        "        v = await core.store.verify_pin(sys.argv[2], Secret(sys.stdin.read()))\n"
        "        return 0 if v.pin_ok else 1\n"
        "    finally:\n"
        "        await core.aclose()\n"
        "sys.exit(asyncio.run(main()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config), barcode],
        input=pin,
        text=True,
        capture_output=True,
        cwd=config.parent,
        timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


# -- usage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [(), ("frobnicate",), ("patron",), ("patron", "add"), ("pin", "check"), ("lockout",)],
)
def test_usage_errors_exit_2(config: Path, args: tuple[str, ...]) -> None:
    assert cli(config, *args).returncode == 2


def test_help_exits_0(config: Path) -> None:
    result = cli(config, "--help")
    assert result.returncode == 0 and "patron-bridge" in result.stdout


def test_config_from_environment(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "BRIDGE_CONFIG": str(config)},
        cwd=config.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["store"]["plugin"] == "sqlite"


# -- pin check --------------------------------------------------------------------------------


def test_pin_check(config: Path) -> None:
    ok = cli(config, "pin", "check", DEMO_PIN)
    assert ok.returncode == 0 and "accepted" in ok.stdout
    for bad, says in [("1212", "repeating"), ("2222", "repeating"), ("12a4", "numbers 0-9")]:
        result = cli(config, "pin", "check", bad)
        assert result.returncode == 1 and says in result.stderr
    result = cli(config, "pin", "check", "123")
    assert result.returncode == 1 and "exactly 4 digits" in result.stderr


def test_pin_check_uses_the_configured_blocklist(tmp_path: Path) -> None:
    (tmp_path / "common.txt").write_text("1234\n")
    path = tmp_path / "bridge.toml"
    path.write_text(base_config(tmp_path) + '\n[pin]\nblocklist_file = "common.txt"\n')
    result = run_cli(path, "pin", "check", "1234")
    assert result.returncode == 1 and "too common" in result.stderr


# -- patron add / show / block ----------------------------------------------------------------


def test_patron_add_and_show(config: Path) -> None:
    added = cli(
        config,
        "patron",
        "add",
        NEW_CARD,
        "--pin-stdin",
        "--name",
        "Added, Alice",
        "--email",
        "alice@example.org",
        "--expires",
        "2031-01-31",
        "--category",
        "ADULT",
        "--fines",
        "1.5",
        input=NEW_PIN + "\n",
    )
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert record["name"] == "Added, Alice" and record["fines"] == "1.50"
    shown = cli(config, "patron", "show", NEW_CARD)
    assert shown.returncode == 0
    record = json.loads(shown.stdout)
    assert record["email"] == "alice@example.org" and record["expires"] == "2031-01-31"
    assert record["locked"] is False
    # PIN state as two flags, never PIN material
    assert record.pop("has_pin") is True and record.pop("needs_pin_reset") is False
    assert not any("pin" in key or "hash" in key for key in record)
    assert "$argon2id$" not in shown.stdout and NEW_PIN not in shown.stdout
    assert verify(config, NEW_CARD, NEW_PIN)
    assert "patron_added" in added.stderr  # the audit line, also in the audit file
    assert "patron_added" in (config.parent / "audit.log").read_text()


def test_patron_add_with_pin_option_and_blocked(config: Path) -> None:
    card = "21234000000101"
    added = cli(config, "patron", "add", card, "--pin", OTHER_PIN, "--blocked", "Lost card")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["blocked_reason"] == "Lost card"
    assert verify(config, card, OTHER_PIN)
    duplicate = cli(config, "patron", "add", card, "--pin", OTHER_PIN)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--pin", "1212"), 1, "repeating"),
        (("--pin", "12a4"), 1, "numbers 0-9"),
        (("--pin", NEW_PIN, "--pin-stdin"), 2, "not both"),
        (("--expires", "31/12/2030"), 2, "expires"),
        (("--fines", "lots"), 2, "fines"),
        (("--fines", "-1"), 2, "fines"),
    ],
)
def test_patron_add_refusals(config: Path, args: tuple[str, ...], code: int, says: str) -> None:
    result = cli(config, "patron", "add", "21234000000199", *args)
    assert result.returncode == code and says in result.stderr
    assert cli(config, "patron", "show", "21234000000199").returncode == 1


def test_patron_add_bad_barcode(config: Path) -> None:
    result = cli(config, "patron", "add", "bad barcode")
    assert result.returncode == 2 and "barcode" in result.stderr


def test_patron_show_unknown(config: Path) -> None:
    result = cli(config, "patron", "show", UNKNOWN)
    assert result.returncode == 1 and UNKNOWN in result.stderr


def test_block_and_unblock(config: Path) -> None:
    card = DEMO["minor"]
    blocked = cli(config, "patron", "block", card, "Damaged items")
    assert blocked.returncode == 0, blocked.stderr
    record = json.loads(blocked.stdout)
    assert record["blocked"] is True and record["blocked_reason"] == "Damaged items"
    assert json.loads(cli(config, "patron", "show", card).stdout)["blocked"] is True
    unblocked = cli(config, "patron", "unblock", card)
    assert unblocked.returncode == 0
    assert json.loads(unblocked.stdout)["blocked"] is False
    assert cli(config, "patron", "block", UNKNOWN, "x").returncode == 1
    assert cli(config, "patron", "unblock", UNKNOWN).returncode == 1


# -- patron import ----------------------------------------------------------------------------


def test_import_keeps_good_rows_and_reports_bad_ones(config: Path, tmp_path: Path) -> None:
    csv = tmp_path / "patrons.csv"
    csv.write_text(
        "barcode,pin,name,email,expires,category,blocked,fines\n"
        f"21234000000201,{NEW_PIN},Good One,,2030-01-01,ADULT,,0\n"  # line 2
        f"21234000000202,3434,Bad Pin,,,,,\n"  # line 3: imported without a PIN
        f"21234000000203,{OTHER_PIN},Bad Date,,2030-13-01,,,\n"  # line 4
        f"21234000000204,{NEW_PIN},Good Two,,,JUVENILE,Lost card,2.50\n"  # line 5
        f"bad barcode,{NEW_PIN},Bad Card,,,,,\n"  # line 6
        f"21234000000206,{NEW_PIN},Bad Fines,,,,,many\n"  # line 7
        f"21234000000207,{NEW_PIN},Too,Many,Fields,,,,,\n"  # line 8
        f"21234000000208,,No Pin,,,,,\n"  # line 9: no PIN is allowed (set at the desk)
    )
    result = cli(config, "patron", "import", str(csv))
    assert result.returncode == 1  # some rows were refused
    errors = [line for line in result.stderr.splitlines() if ": line " in line]
    assert [e.split(": line ")[1].split(":")[0] for e in errors] == ["3", "4", "6", "7", "8"]
    for pin in (NEW_PIN, OTHER_PIN, "3434"):
        assert pin not in result.stderr  # bad rows are described, never quoted
    assert "imported 4 patrons (4 added" in result.stdout
    assert "1 without a PIN" in result.stdout and "skipped 4 bad rows" in result.stdout
    for card in ("21234000000201", "21234000000202", "21234000000204", "21234000000208"):
        assert cli(config, "patron", "show", card).returncode == 0
    assert json.loads(cli(config, "patron", "show", "21234000000202").stdout)["needs_pin_reset"]
    for card in ("21234000000203", "21234000000206", "21234000000207"):
        assert cli(config, "patron", "show", card).returncode == 1
    assert verify(config, "21234000000204", NEW_PIN)
    assert not verify(config, "21234000000208", NEW_PIN)
    record = json.loads(cli(config, "patron", "show", "21234000000204").stdout)
    assert record["blocked_reason"] == "Lost card" and record["fines"] == "2.50"


def test_import_all_good_exits_0(config: Path, tmp_path: Path) -> None:
    csv = tmp_path / "ok.csv"
    rows = "".join(f"2123400000{300 + i:04d},{NEW_PIN},Patron {i},,,,,\n" for i in range(450))
    csv.write_text("barcode,pin,name,email,expires,category,blocked,fines\n" + rows)
    result = cli(config, "patron", "import", str(csv))
    assert result.returncode == 0, result.stderr
    assert "imported 450 patrons (450 added" in result.stdout
    assert "skipped 0 bad rows" in result.stdout and "rows/s" in result.stdout


def test_import_bad_header_and_missing_file(config: Path, tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("card,pin\n1,2\n")
    result = cli(config, "patron", "import", str(csv))
    assert result.returncode == 2 and "line 1" in result.stderr
    result = cli(config, "patron", "import", str(tmp_path / "absent.csv"))
    assert result.returncode == 2 and "absent.csv" in result.stderr
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"barcode,pin\n\xff\xfe\n")
    result = cli(config, "patron", "import", str(binary))
    assert result.returncode == 2 and "UTF-8" in result.stderr


# -- pin set ----------------------------------------------------------------------------------


def test_pin_set_from_stdin(config: Path) -> None:
    card = DEMO["fines"]
    result = cli(config, "pin", "set", card, "--stdin", "--staff", "desk-3", input=NEW_PIN + "\n")
    assert result.returncode == 0, result.stderr
    assert verify(config, card, NEW_PIN) and not verify(config, card, DEMO_PIN)
    assert "desk-3" in (config.parent / "audit.log").read_text()
    refused = cli(config, "pin", "set", card, "--stdin", input="2222\n")
    assert refused.returncode == 1 and "repeating" in refused.stderr
    unknown = cli(config, "pin", "set", UNKNOWN, "--stdin", input=OTHER_PIN + "\n")
    assert unknown.returncode == 1 and "no such card" in unknown.stderr
    empty = cli(config, "pin", "set", card, "--stdin", input="")
    assert empty.returncode == 2


class Terminal:
    """The CLI under a pseudo-terminal: prompts are read, answers typed."""

    def __init__(self, config: Path, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--config", str(config), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=config.parent,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            ready, _, _ = select.select([self.master], [], [], max(deadline - time.monotonic(), 0))
            assert ready, f"no {text!r} from the CLI: {self.seen!r}"
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"CLI ended before {text!r}: {self.seen!r}"
            self.seen += chunk

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def finish(self) -> int:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.seen += chunk
        code = self.proc.wait(timeout=120)
        os.close(self.master)
        log = Path(self.proc.args[4]).parent / "cli.log"  # type: ignore[index]
        with log.open("a") as handle:
            handle.write(self.seen.decode(errors="replace"))
        if log not in LOG_FILES:
            LOG_FILES.append(log)
        return code


def test_pin_set_twice_at_a_terminal(config: Path) -> None:
    card = DEMO["expired"]
    term = Terminal(config, "pin", "set", card)
    term.expect("New PIN: ")
    term.type(OTHER_PIN)
    term.expect("New PIN again: ")
    term.type(OTHER_PIN)
    assert term.finish() == 0, term.seen
    assert b"PIN set" in term.seen
    assert OTHER_PIN.encode() not in term.seen  # typed without echo
    assert verify(config, card, OTHER_PIN)


def test_pin_set_at_a_terminal_mismatch(config: Path) -> None:
    card = DEMO["expired"]
    term = Terminal(config, "pin", "set", card)
    term.expect("New PIN: ")
    term.type(NEW_PIN)
    term.expect("New PIN again: ")
    term.type(WRONG_PIN)
    assert term.finish() == 1
    assert b"do not match" in term.seen
    assert not verify(config, card, NEW_PIN)


# -- lockout clear and cert generate ----------------------------------------------------------


def test_lockout_clear(config: Path) -> None:
    """A card locked in the throttle file (by a daemon that has since stopped) is cleared."""
    card = DEMO["active"]
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from bridge.core.throttle import Throttle, ThrottleRules\n"
        "from bridge.state.sqlite_throttle import SqliteThrottleBackend\n"
        "t = Throttle(ThrottleRules(card_lock_after=2, card_lock_seconds=0),"
        " SqliteThrottleBackend(Path(sys.argv[1])))\n"
        "import time\nt.record_failure(sys.argv[2], 's', time.time())\n"
        "t.record_failure(sys.argv[2], 's', time.time())\nt.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(config.parent / "throttle.db"), card],
        check=True,
        timeout=120,
    )
    assert json.loads(cli(config, "patron", "show", card).stdout)["locked"] is True
    cleared = cli(config, "lockout", "clear", card)
    assert cleared.returncode == 0, cleared.stderr
    assert f"lock cleared for {card}" in cleared.stdout
    assert json.loads(cli(config, "patron", "show", card).stdout)["locked"] is False
    assert "lock_cleared" in (config.parent / "audit.log").read_text()
    unknown = cli(config, "lockout", "clear", UNKNOWN)
    assert unknown.returncode == 1 and "no card" in unknown.stderr


def test_cert_generate(config: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    result = cli(
        config, "cert", "generate", "--cert", str(cert), "--key", str(key), "--host", "127.0.0.1"
    )
    assert result.returncode == 0, result.stderr
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.stat().st_mode & 0o777 == 0o600
    from cryptography import x509

    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    (tmp_path / "file").write_text("")
    bad = cli(config, "cert", "generate", "--cert", str(tmp_path / "file" / "c.pem"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_damaged_pepper_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(base_config(tmp_path))
    (tmp_path / "pepper.key").write_bytes(b"short")
    for args in (("patron", "show", DEMO["active"]), ("serve",)):
        result = run_cli(path, *args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "pepper" in lines[0] and "Traceback" not in result.stderr


def test_a_reader_that_leaves_early_is_not_a_traceback(config: Path) -> None:
    """`patron-bridge patron show X | head -1`: the pipe's reader is gone before the record is
    written; the CLI ends quietly with 141 (128 + SIGPIPE), not a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # no reader at all: the first write fails with EPIPE
    try:
        result = subprocess.run(
            cli_command(config, "patron", "show", DEMO["active"]),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=config.parent,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
