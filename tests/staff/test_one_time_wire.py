"""The one-time PIN through the real daemon over the two paths not run before: 802.1X
EAP-TTLS/PAP with wpa_supplicant's `eapol_test`, and LDAP Password Modify with OpenLDAP's
`ldappasswd`. Both refuse it with their documented answers and the audit reason
`one-time PIN: change at My Account`, and the refusals spend no guess: after more of them than
the card's lock needs, the card is not locked and the one-time PIN is still refused the same
way (not as a locked card)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.core.one_time import MUST_CHANGE_REASON
from tests.conftest import require_tool
from tests.harness import DEMO, Daemon
from tests.pins import NEW_PIN
from tests.radius.eap.supplicant import RADIUS_EAP, eapol_test, make_certificates, ttls
from tests.staff.support import PASSWORD

ADULT = DEMO["active"]
SLIP_PIN = re.compile(r'id="one-time-pin">(\d+)<')
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
# Two wrong PINs would lock the card: the one-time PIN is refused more often than that.
THROTTLE = "card_free_failures = 1\ncard_delay_base = 60.0\ncard_lock_after = 2\n"
TRIES = 3
SECTIONS = '[staff]\nlisten = "127.0.0.1:0"\n\n[ldap]\nlisten = ["127.0.0.1:0"]\n\n' + RADIUS_EAP


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Daemon]:
    require_tool("eapol_test")
    require_tool("ldappasswd")
    daemon = Daemon(tmp_path, SECTIONS, throttle=THROTTLE)
    make_certificates(daemon)
    daemon.start()
    try:
        made = daemon.cli("staff", "add", "dana", "--role", "desk", "--stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
        yield daemon
    finally:
        daemon.stop()


def issue_one_time_pin(bridge: Daemon, barcode: str) -> str:
    """Signs in at the desk and prints a one-time PIN after the photo-ID check: the slip's PIN."""
    host, port = bridge.address("staff")
    with httpx.Client(base_url=f"http://{host}:{port}") as desk:

        def csrf(path: str) -> str:
            found = CSRF.search(desk.get(path).text)
            assert found
            return found.group(1)

        data = {"csrf": csrf("/login"), "name": "dana", "password": PASSWORD, "branch": "0"}
        assert desk.post("/login", data=data).status_code == 303
        slip = desk.post(
            f"/card/{barcode}/onetime", data={"csrf": csrf("/desk"), "check": "photo_id"}
        )
        found = SLIP_PIN.search(slip.text)
        assert found, slip.text
        return found.group(1)


def refused(bridge: Daemon, protocol: str, count: int) -> list[dict[str, Any]]:
    """The audit's decisions of `protocol` on the card, once `count` are written (the audit
    line follows the answer)."""
    events: list[dict[str, Any]] = []
    for _ in range(100):
        events = [
            e
            for e in bridge.audit_events()
            if e.get("protocol") == protocol and e.get("barcode", "").endswith(ADULT[-4:])
        ]
        if len(events) >= count:
            break
        time.sleep(0.1)
    return events


def assert_must_change(events: list[dict[str, Any]]) -> None:
    assert [(e["outcome"], e["reason"]) for e in events] == [
        ("pin_must_change", MUST_CHANGE_REASON)
    ] * TRIES


def test_eap_ttls_pap_refuses_a_one_time_pin(bridge: Daemon) -> None:
    pin = issue_one_time_pin(bridge, ADULT)
    for attempt in range(TRIES):
        result = eapol_test(bridge, ttls(bridge, ADULT, pin), name=f"one-time-{attempt}")
        assert result.returncode != 0
        assert "code=3 (Access-Reject)" in result.stdout and "FAILURE" in result.stdout
        reject = result.stdout[result.stdout.index("code=3 (Access-Reject)") :]
        assert "Value: 'Please change your PIN at My Account first.'" in reject
    assert_must_change(refused(bridge, "radius-eap", TRIES))
    assert MUST_CHANGE_REASON == "one-time PIN: change at My Account"
    assert pin not in bridge.logs()


def ldappasswd(bridge: Daemon, old: str, new: str) -> subprocess.CompletedProcess[str]:
    """RFC 3062 without a bind: the old PIN in the request (as a patron's tool sends it)."""
    host, port = bridge.address("ldap")
    user = f"uid={ADULT},ou=patrons,dc=library,dc=example"
    return subprocess.run(
        ["ldappasswd", "-x", "-H", f"ldap://{host}:{port}", "-a", old, "-s", new, user],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_ldap_password_modify_refuses_a_one_time_pin(bridge: Daemon) -> None:
    pin = issue_one_time_pin(bridge, ADULT)
    for _ in range(TRIES):
        answer = ldappasswd(bridge, pin, NEW_PIN)
        assert answer.returncode != 0
        assert "Invalid credentials (49)" in answer.stdout, answer.stdout + answer.stderr
    assert_must_change(refused(bridge, "ldap", TRIES))
    # Nothing was changed: the new PIN is no PIN of this card.
    assert "Invalid credentials (49)" in ldappasswd(bridge, NEW_PIN, NEW_PIN).stdout
    assert pin not in bridge.logs()
