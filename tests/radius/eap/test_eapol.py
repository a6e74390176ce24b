"""802.1X against the real daemon with the real supplicant: wpa_supplicant's `eapol_test`
(Debian eapoltest) runs EAP-TTLS/PAP through the bridge's RADIUS port.

The certificates come from `patron-bridge cert generate --ca`, as a library would make them for
a trial; a second, unrelated CA stands for a supplicant that does not trust the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.eap.supplicant import (
    RADIUS_EAP,
    eapol_test,
    make_certificates,
    peap,
    ttls,
)

SECTIONS = RADIUS_EAP + "reply = { Session-Timeout = 14400 }\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_tool("eapol_test")
    tmp = tmp_path_factory.mktemp("eap")
    d = Daemon(tmp, SECTIONS)
    make_certificates(d)
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def daemon13(daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A second daemon offering TLS 1.3, with the first one's certificates."""
    tmp = tmp_path_factory.mktemp("eap13")
    (tmp / "tls").symlink_to(daemon.dir / "tls")
    sections = SECTIONS.replace("[radius.eap]\n", '[radius.eap]\ntls_max_version = "1.3"\n')
    d = Daemon(tmp, sections).start()
    try:
        yield d
    finally:
        d.stop()


def test_ttls_pap_right_pin_succeeds_with_mppe_keys(daemon: Daemon) -> None:
    result = eapol_test(daemon, ttls(daemon, DEMO["active"], DEMO_PIN), name="ok")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout
    assert "SUCCESS" in result.stdout
    accept = result.stdout[result.stdout.index("code=2 (Access-Accept)") :]
    assert "Attribute 27 (Session-Timeout)" in accept  # the client's reply attributes
    assert "Attribute 1 (User-Name)" not in accept  # accept_user_name is off by default


@pytest.mark.parametrize("card", ["expired", "blocked"])
def test_expired_and_blocked_cards_fail(daemon: Daemon, card: str) -> None:
    result = eapol_test(daemon, ttls(daemon, DEMO[card], DEMO_PIN), name=card)
    assert result.returncode != 0
    assert "code=3 (Access-Reject)" in result.stdout
    assert "FAILURE" in result.stdout


def test_tls13_offered_but_supplicant_default_uses_tls12(daemon13: Daemon) -> None:
    result = eapol_test(daemon13, ttls(daemon13, DEMO["active"], DEMO_PIN), name="13-default")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout


def test_ttls_pap_over_tls13(daemon13: Daemon) -> None:
    net = ttls(daemon13, DEMO["active"], DEMO_PIN, phase1='"tls_disable_tlsv1_3=0"')
    result = eapol_test(daemon13, net, name="13")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "TLSv1.3" in result.stdout
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout


def test_ttls_over_tls13_does_not_resume(daemon13: Daemon) -> None:
    """TTLS resumes on TLS 1.2 only: over TLS 1.3 both runs of -r1 are full handshakes, each
    with its PIN checked."""
    net = ttls(daemon13, DEMO["active"], DEMO_PIN, phase1='"tls_disable_tlsv1_3=0"')
    result = eapol_test(daemon13, net, name="13-resume", extra=("-r1",))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 2  mismatch: 0" in result.stdout
    assert result.stdout.count("Handshake finished - resumed=0") == 2


def test_peap_gtc_right_pin_succeeds_with_mppe_keys(daemon: Daemon) -> None:
    result = eapol_test(daemon, peap(daemon, DEMO["minor"], DEMO_PIN), name="peap-ok")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout
    assert "EAP-PEAP" in result.stdout


def test_peap_gtc_wrong_pin_and_peap_mschapv2_fail(daemon: Daemon) -> None:
    wrong = eapol_test(daemon, peap(daemon, DEMO["fines"], WRONG_PIN), name="peap-wrong")
    assert wrong.returncode != 0 and "FAILURE" in wrong.stdout
    mschap = eapol_test(daemon, peap(daemon, DEMO["active"], DEMO_PIN, "MSCHAPV2"), name="pm")
    assert mschap.returncode != 0 and "FAILURE" in mschap.stdout


def test_peap_gtc_over_tls13(daemon13: Daemon) -> None:
    net = peap(daemon13, DEMO["active"], DEMO_PIN)
    net["phase1"] = '"tls_disable_tlsv1_3=0"'
    result = eapol_test(daemon13, net, name="peap13")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "TLSv1.3" in result.stdout
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout


@pytest.mark.parametrize("method", ["TTLS", "PEAP"])
def test_second_authentication_resumes(daemon: Daemon, method: str) -> None:
    """eapol_test -r1 authenticates twice on one supplicant; the second run resumes the TLS
    session. PEAP still runs EAP-GTC inside; TTLS skips the inner PAP (as wpa_supplicant does
    on a resumed TTLS tunnel), and the bridge accepts it for the card the first run accepted,
    in good standing now (audited with reason "resumed"). Both give the AP fresh MPPE keys."""
    net = ttls(daemon, DEMO["active"], DEMO_PIN)
    if method == "PEAP":
        net = peap(daemon, DEMO["active"], DEMO_PIN)
    result = eapol_test(daemon, net, name=f"resume-{method}", extra=("-r1",))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 2  mismatch: 0" in result.stdout
    assert result.stdout.count("Handshake finished - resumed=1") == 1
    assert result.stdout.count("Handshake finished - resumed=0") == 1


def test_ttls_resumption_refused_after_a_failed_first_run(daemon: Daemon) -> None:
    """A session whose first authentication was refused (right PIN, expired card) is not
    resumable: both runs are full handshakes and both fail (OpenSSL drops the session; the
    bridge remembered nothing for it)."""
    net = ttls(daemon, DEMO["expired"], DEMO_PIN)
    result = eapol_test(daemon, net, name="resume-wrong", extra=("-r1",))
    assert result.returncode != 0
    assert "Handshake finished - resumed=1" not in result.stdout
    assert result.stdout.count("EAP: Received EAP-Failure") >= 1


def test_ttls_pap_wrong_pin_fails(daemon: Daemon) -> None:
    result = eapol_test(daemon, ttls(daemon, DEMO["active"], WRONG_PIN), name="wrong")
    assert result.returncode != 0
    assert "FAILURE" in result.stdout


def test_ttls_pap_unknown_card_fails(daemon: Daemon) -> None:
    result = eapol_test(daemon, ttls(daemon, UNKNOWN, DEMO_PIN), name="unknown")
    assert result.returncode != 0
    assert "FAILURE" in result.stdout


def test_anonymous_outer_identity_is_not_the_barcode(daemon: Daemon) -> None:
    """Outer identity a real card, inner identity another: the inner one is checked."""
    net = ttls(daemon, DEMO["active"], DEMO_PIN, anonymous_identity=f'"{DEMO["blocked"]}"')
    result = eapol_test(daemon, net, name="outer")
    assert result.returncode == 0, result.stdout[-3000:]


def test_small_framed_mtu_fragments_both_ways(daemon: Daemon) -> None:
    net = ttls(daemon, DEMO["active"], DEMO_PIN, fragment_size="100")
    result = eapol_test(daemon, net, name="mtu", extra=("-N12:d:300",))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "MPPE keys OK: 1  mismatch: 0" in result.stdout
    # the peer fragmented its ClientHello; the server's flight came in pieces it acknowledged
    assert "more fragments will follow" in result.stdout
    assert "bytes more input data" in result.stdout
    sizes = re.findall(r"decapsulated EAP packet \(code=1 id=\d+ len=(\d+)\)", result.stdout)
    assert sizes and max(int(n) for n in sizes) <= 300 - 4  # Framed-MTU minus EAPOL header


def test_mschapv2_is_refused(daemon: Daemon) -> None:
    net = ttls(daemon, DEMO["active"], DEMO_PIN, phase2='"auth=MSCHAPV2"')
    result = eapol_test(daemon, net, name="inner-mschap")
    assert result.returncode != 0
    outer = ttls(daemon, DEMO["active"], DEMO_PIN, eap="MSCHAPV2")
    del outer["phase2"], outer["ca_cert"], outer["anonymous_identity"]
    result = eapol_test(daemon, outer, name="outer-mschap")
    assert result.returncode != 0
    # the reasons in the log are checked by the last test, once the daemon has stopped


def test_untrusted_server_certificate_fails(daemon: Daemon) -> None:
    net = ttls(daemon, DEMO["active"], DEMO_PIN, ca_cert=f'"{daemon.dir / "other" / "ca.pem"}"')
    result = eapol_test(daemon, net, name="untrusted")
    assert result.returncode != 0
    assert "FAILURE" in result.stdout


def test_last_audit_names_inner_cards_only(daemon: Daemon) -> None:
    """Runs last: stops the daemon so its audit file is complete. Every EAP decision is
    audited as `radius-eap` under the inner card (masked); the blocked card that was only ever
    an outer identity is never audited, and MSCHAPv2 or untrusted runs never reach the store."""
    assert daemon.stop() == 0
    events = [e for e in daemon.audit_events() if e.get("protocol") == "radius-eap"]
    outcomes = [e["outcome"] for e in events]
    # right PIN, anonymous outer, small MTU, PEAP/GTC, 2 x 2 resumption runs (the TLS 1.3
    # daemon audits to its own file): a resumed PEAP run is a PIN check like any other, a
    # resumed TTLS run a standing check with its own reason
    assert outcomes.count("accepted") == 8
    assert [e["reason"] for e in events].count("resumed") == 1
    # the outer identity's realm, never its user part (the blocked card's number)
    assert {e.get("realm") for e in events} == {"library.example", None}
    assert not any("21234000000003" in str(e.get("realm")) for e in events)
    assert any(e["barcode"] == "**********0004" and e["outcome"] == "accepted" for e in events)
    assert any(e["barcode"] == "**********0005" and e["outcome"] == "bad_pin" for e in events)
    assert "bad_pin" in outcomes and "unknown_card" in outcomes
    assert "card_expired" in outcomes and "card_blocked" in outcomes
    # the blocked card was audited once, from its own inner run, never as an outer identity
    assert sum(e["barcode"] == "**********0003" for e in events) == 1
    assert all(e["client"] == "wifi" for e in events)
    logs = Path(daemon.stderr_path).read_text()
    assert "inner MS-CHAP-V2 is not supported" in logs
    assert "asked for EAP-MSCHAPv2" in logs
    assert "TLS handshake failed" in logs  # the supplicant that did not trust the server
    assert "inner EAP-GTC refused, peer asked for EAP-MSCHAPv2" in logs
