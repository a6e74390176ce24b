"""`patron import` and the admin verbs through the real CLI, on SQLite and on PostgreSQL: an
import never erases a PIN (the patron still binds over LDAP with ldap3 against the real daemon),
a card twice in one file is reported with both lines and not applied, a PIN that breaks the
policy imports the patron without a PIN and flags it, modes and dry runs, update/delete/list."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import DEMO, UNKNOWN
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN
from tests.store_setups import Setup, ldap_bind, run, store_setup  # noqa: F401  (fixture `setup`)


def show(setup: Setup, barcode: str) -> dict[str, object]:
    result = setup.daemon.cli("patron", "show", barcode)
    assert result.returncode == 0, result.stderr
    record: dict[str, object] = json.loads(result.stdout)
    return record


def write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


# -- the cases ------------------------------------------------------------------------


def test_reimport_without_pin_keeps_the_pin_and_ldap_still_binds(setup: Setup) -> None:
    card = DEMO["active"]
    with setup.daemon as daemon:
        assert ldap_bind(daemon, card, DEMO_PIN)
        csv = write(daemon.dir, "emails.csv", f"barcode,email\n{card},fresh@example.org\n")
        result = daemon.cli("patron", "import", str(csv))
        assert result.returncode == 0, result.stderr
        assert "1 updated" in result.stdout and "rows/s" in result.stdout
        record = show(setup, card)
        assert record["email"] == "fresh@example.org" and record["has_pin"] is True
        assert record["name"] == "Rivera, Ana"  # a column the file lacks is kept
        # empty cells keep too, and an empty pin cell never clears the PIN
        csv = write(daemon.dir, "blank.csv", f"barcode,pin,pin_hash,name,email\n{card},,,,\n")
        result = daemon.cli("patron", "import", str(csv))
        assert result.returncode == 0, result.stderr
        assert "1 unchanged" in result.stdout
        assert show(setup, card)["email"] == "fresh@example.org"
        assert ldap_bind(daemon, card, DEMO_PIN)


def test_an_imported_pin_replaces_the_cached_one_at_once(setup: Setup) -> None:
    """The daemon had verified the old PIN (cached for cache.ttl): after an import that
    replaces it, the old PIN fails at once and the new one binds."""
    card = DEMO["active"]
    with setup.daemon as daemon:
        assert ldap_bind(daemon, card, DEMO_PIN)  # verified and cached
        csv = write(daemon.dir, "pins.csv", f"barcode,pin\n{card},{NEW_PIN}\n")
        result = daemon.cli("patron", "import", str(csv))
        assert result.returncode == 0, result.stderr
        assert "1 updated" in result.stdout
        assert not ldap_bind(daemon, card, DEMO_PIN)
        assert ldap_bind(daemon, card, NEW_PIN)


def test_duplicate_barcode_reported_with_both_lines_and_neither_applied(setup: Setup) -> None:
    tmp = setup.daemon.dir
    csv = write(
        tmp,
        "dup.csv",
        "barcode,name\n"
        "21234000000501,First\n"  # line 2
        f"{DEMO['minor']},Changed Minor\n"  # line 3
        "21234000000501,Second\n"  # line 4
        "21234000000502,Other\n",  # line 5
    )
    result = run(setup, "patron", "import", str(csv))
    assert result.returncode == 1
    assert f"{csv}: lines 2, 4: barcode: the same card on each of these lines" in result.stderr
    assert "skipped 2 bad rows" in result.stdout and "1 added, 1 updated" in result.stdout
    assert run(setup, "patron", "show", "21234000000501").returncode == 1
    assert show(setup, "21234000000502")["name"] == "Other"


def test_policy_breaking_pin_imported_without_pin_and_flagged(setup: Setup) -> None:
    tmp = setup.daemon.dir
    csv = write(
        tmp,
        "pins.csv",
        "barcode,pin,name\n"
        f"21234000000601,{NEW_PIN},Good\n"  # line 2
        "21234000000602,1212,Repeats\n"  # line 3
        f"{DEMO['fines']},2222,Existing\n"  # line 4: keeps its stored PIN
        "21234000000604,12a4,Letters\n",  # line 5
    )
    result = run(setup, "patron", "import", str(csv))
    assert result.returncode == 1, result.stderr
    assert f"{csv}: line 3: pin: repeating digits (policy); imported without a PIN" in (
        result.stderr
    )
    assert f"{csv}: line 4: pin: repeating digits (policy); stored PIN kept" in result.stderr
    assert f"{csv}: line 5: pin: not only digits 0-9 (policy)" in result.stderr
    for pin in ("1212", "2222", "12a4", NEW_PIN):
        assert pin not in result.stderr + result.stdout
    assert "2 without a PIN and 1 with their stored PIN kept" in result.stdout
    flagged = show(setup, "21234000000602")
    assert flagged["has_pin"] is False and flagged["needs_pin_reset"] is True
    assert show(setup, DEMO["fines"])["needs_pin_reset"] is False
    listed = run(setup, "patron", "list", "--no-pin")
    assert listed.returncode == 0, listed.stderr
    cards = [json.loads(line)["barcode"] for line in listed.stdout.splitlines()]
    assert cards == ["21234000000602", "21234000000604"]
    assert "hash" not in listed.stdout and "$argon2" not in listed.stdout
    # a PIN set at the desk clears the flag
    done = run(setup, "pin", "set", "21234000000602", "--stdin", input=OTHER_PIN + "\n")
    assert done.returncode == 0, done.stderr
    fixed = show(setup, "21234000000602")
    assert fixed["has_pin"] is True and fixed["needs_pin_reset"] is False
    # --skip-bad-pins: the old behaviour, the row is not imported
    csv = write(tmp, "skip.csv", "barcode,pin\n21234000000605,1111\n")
    skipped = run(setup, "patron", "import", "--skip-bad-pins", str(csv))
    assert skipped.returncode == 1 and "line 2: pin: repeating digits (policy)" in skipped.stderr
    assert run(setup, "patron", "show", "21234000000605").returncode == 1


def test_modes_dry_run_and_blank_clears(setup: Setup) -> None:
    tmp = setup.daemon.dir
    card = DEMO["active"]
    csv = write(tmp, "m.csv", f"barcode,name,email\n{card},Renamed,\n21234000000701,New,\n")
    dry = run(setup, "patron", "import", "--dry-run", str(csv))
    assert dry.returncode == 0, dry.stderr
    assert "line 2: would update name" in dry.stdout
    assert "line 3: would add a new patron" in dry.stdout
    assert "dry run, nothing written" in dry.stdout
    assert run(setup, "patron", "show", "21234000000701").returncode == 1
    assert show(setup, card)["name"] == "Rivera, Ana"
    add = run(setup, "patron", "import", "--mode", "add", str(csv))
    assert add.returncode == 1 and "line 2: barcode: already in the store (--mode add)" in (
        add.stderr
    )
    assert show(setup, "21234000000701")["name"] == "New"
    assert show(setup, card)["name"] == "Rivera, Ana"
    csv2 = write(tmp, "u.csv", f"barcode,name,email\n{card},Renamed,\n21234000000702,Nope,\n")
    update = run(setup, "patron", "import", "--mode", "update", "--blank-clears", str(csv2))
    assert update.returncode == 1 and "line 3: barcode: not in the store (--mode update)" in (
        update.stderr
    )
    record = show(setup, card)
    assert record["name"] == "Renamed" and record["email"] is None and record["has_pin"] is True


def test_every_field_through_a_batch_and_back(setup: Setup) -> None:
    """Each column's type goes into the store and comes back (PostgreSQL loads a batch with
    COPY: new patrons straight in, updates through a temporary table), then a second file
    updates some fields, clears others (--blank-clears) and leaves the rest."""
    tmp = setup.daemon.dir
    new, old = "21234000000801", DEMO["fines"]
    header = "barcode,record_id,name,email,category,expires,blocked,fines,home_library"
    first = write(
        tmp,
        "all.csv",
        f"{header}\n"
        f'{new},rec-801,"Okafor, Ada",ada@example.org,ADULT,2031-05-06,lost card,4.25,MAIN\n'
        f'{old},rec-805,"Lind, Bo",bo@example.org,CHILD,2030-01-02,,0.50,EAST\n',
    )
    loaded = run(setup, "patron", "import", str(first))
    assert loaded.returncode == 0, loaded.stderr
    added = show(setup, new)
    assert {k: added[k] for k in added if k not in ("barcode", "locked")} == {
        "record_id": "rec-801",
        "name": "Okafor, Ada",
        "email": "ada@example.org",
        "category": "ADULT",
        "expires": "2031-05-06",
        "blocked": True,
        "blocked_reason": "lost card",
        "fines": "4.25",
        "home_library": "MAIN",
        "has_pin": False,
        "needs_pin_reset": False,
    }
    updated = show(setup, old)
    assert (updated["record_id"], updated["category"], updated["expires"]) == (
        "rec-805",
        "CHILD",
        "2030-01-02",
    )
    assert (updated["fines"], updated["home_library"], updated["has_pin"]) == ("0.50", "EAST", True)
    second = write(
        tmp,
        "again.csv",
        f"barcode,name,email,expires,blocked,fines,pin\n{new},,,2032-07-08,,,{NEW_PIN}\n",
    )
    again = run(setup, "patron", "import", "--blank-clears", str(second))
    assert again.returncode == 0, again.stderr
    after = show(setup, new)
    assert (after["name"], after["email"], after["expires"]) == ("", None, "2032-07-08")
    assert (after["blocked"], after["blocked_reason"], after["fines"]) == (False, None, "0.00")
    assert (after["category"], after["home_library"], after["has_pin"]) == ("ADULT", "MAIN", True)
    with setup.daemon as daemon:  # the PIN the second file gave works over LDAP
        assert ldap_bind(daemon, new, NEW_PIN)


def test_a_batch_the_store_refuses_is_reported_and_not_applied(setup: Setup) -> None:
    """A new card with a record_id another card holds: the store refuses the batch (on
    PostgreSQL the COPY fails), the import names the lines and no row of the batch is in."""
    taken = show(setup, DEMO["active"])["record_id"]
    csv = write(
        setup.daemon.dir,
        "clash.csv",
        f"barcode,record_id,name\n21234000000901,rec-901,Fine\n21234000000902,{taken},Clash\n",
    )
    result = run(setup, "patron", "import", str(csv))
    assert result.returncode == 1
    assert "clash.csv: lines 2-3: batch refused" in result.stderr, result.stderr
    assert "record_id used by two cards" in result.stderr, result.stderr
    for barcode in ("21234000000901", "21234000000902"):
        assert run(setup, "patron", "show", barcode).returncode == 1


# -- update / delete / list / lockout ---------------------------------------------------------


def test_update_delete_and_list(setup: Setup) -> None:
    card = DEMO["minor"]
    updated = run(setup, "patron", "update", card, "--email", "m@example.org", "--fines", "3")
    assert updated.returncode == 0, updated.stderr
    record = json.loads(updated.stdout)
    assert record["email"] == "m@example.org" and record["fines"] == "3.00"
    assert record["name"] == show(setup, card)["name"] != ""  # not given: kept
    assert run(setup, "patron", "update", card).returncode == 2  # nothing to change
    assert run(setup, "patron", "update", UNKNOWN, "--name", "X").returncode == 1
    blocked = run(setup, "patron", "list", "--blocked")
    assert [json.loads(line)["barcode"] for line in blocked.stdout.splitlines()] == [
        DEMO["blocked"]
    ]
    expired = run(setup, "patron", "list", "--expired")
    assert DEMO["expired"] in expired.stdout and DEMO["active"] not in expired.stdout
    page = run(setup, "patron", "list", "--limit", "2")
    assert len(page.stdout.splitlines()) == 2 and "--after" in page.stderr
    after = json.loads(page.stdout.splitlines()[-1])["barcode"]
    rest = run(setup, "patron", "list", "--after", after)
    assert len(rest.stdout.splitlines()) == 3
    deleted = run(setup, "patron", "delete", card, "--staff", "desk-9")
    assert deleted.returncode == 0, deleted.stderr
    assert run(setup, "patron", "show", card).returncode == 1
    assert run(setup, "patron", "delete", card).returncode == 1
    audit = (setup.daemon.dir / "audit.log").read_text()
    assert "patron_deleted" in audit and "desk-9" in audit


def test_delete_reaches_the_running_daemon(setup: Setup) -> None:
    """The daemon's cached verification goes with the patron: the next bind fails at once."""
    card = DEMO["active"]
    with setup.daemon as daemon:
        assert ldap_bind(daemon, card, DEMO_PIN)
        assert ldap_bind(daemon, card, DEMO_PIN)  # now answered from the verified cache
        deleted = daemon.cli("patron", "delete", card)
        assert deleted.returncode == 0, deleted.stderr
        assert "(daemon told)" in deleted.stdout
        assert not ldap_bind(daemon, card, DEMO_PIN)
