"""One-time PINs in the core: refused off the PIN pages with their own outcome and audit
reason, accepted at the PIN pages only as `must_change`, never cached, never counted as a
wrong guess, expired after `PinPolicy.one_time_hours` everywhere, changed by `change_pin`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core import one_time
from bridge.core.patron import Context, Outcome
from bridge.core.pin import PinPolicy
from bridge.core.secret import Secret
from tests.core.support import Rig, fast_hasher, make_auth, sqlite_store
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN

CARD = "21234000000001"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    hasher = fast_hasher()
    store = await sqlite_store(tmp_path / "p.db", hasher, DEMO_PIN)
    made = make_auth(store, hasher)
    made.clock.now = time.time()
    try:
        yield made
    finally:
        await store.aclose()
        hasher.close()


async def issue(rig: Rig) -> str:
    result, pin = await rig.auth.issue_one_time_pin(CARD, actor="staff:test")
    assert result.ok and rig.auth.pin_policy.check(pin).ok
    return pin


def at(protocol: str) -> Context:
    return Context(protocol, f"{protocol}-client", "192.0.2.7")


@pytest.mark.parametrize("protocol", ["sip2", "ldap", "radius", "eap", "oidc", "saml"])
async def test_refused_off_the_pin_pages_and_never_cached(rig: Rig, protocol: str) -> None:
    pin = await issue(rig)
    for _ in range(2):  # the second time too: nothing was cached
        decision = await rig.auth.authenticate(CARD, Secret(pin), at(protocol))
        assert decision.outcome is Outcome.PIN_MUST_CHANGE
        assert decision.reason == one_time.MUST_CHANGE_REASON
        assert not decision.pin_ok
    assert rig.throttle.failures(CARD, rig.clock()) == 0  # a right PIN is no guess
    assert rig.auth.settle(CARD, Secret(pin), at(protocol)) is None  # no cached answer


async def test_the_pin_pages_take_it_only_as_must_change(rig: Rig) -> None:
    pin = await issue(rig)
    decision = await rig.auth.authenticate(CARD, Secret(pin), at("portal"))
    assert decision.accepted and decision.must_change
    assert rig.auth.settle(CARD, Secret(pin), at("portal")) is None
    changed = await rig.auth.change_pin(
        CARD, Secret(pin), Secret(NEW_PIN), Secret(NEW_PIN), at("portal")
    )
    assert changed.ok
    for protocol in ("sip2", "ldap", "radius", "portal"):
        decision = await rig.auth.authenticate(CARD, Secret(NEW_PIN), at(protocol))
        assert decision.accepted and not decision.must_change
    assert (await rig.auth.authenticate(CARD, Secret(pin), at("sip2"))).outcome is Outcome.BAD_PIN


async def test_other_front_ends_cannot_change_it(rig: Rig) -> None:
    """LDAP Password Modify is a PIN change too: not with a one-time PIN."""
    pin = await issue(rig)
    refused = await rig.auth.change_pin(
        CARD, Secret(pin), Secret(NEW_PIN), Secret(NEW_PIN), at("ldap")
    )
    assert not refused.ok and refused.outcome is Outcome.PIN_MUST_CHANGE


async def test_it_expires_everywhere(rig: Rig) -> None:
    rig.auth.pin_policy = dataclasses.replace(PinPolicy(), one_time_hours=2)
    pin = await issue(rig)
    rig.clock.now += 2 * 3600 + 60
    for protocol in ("portal", "sip2"):
        decision = await rig.auth.authenticate(CARD, Secret(pin), at(protocol))
        assert decision.outcome is Outcome.PIN_MUST_CHANGE
        assert decision.reason == one_time.EXPIRED_REASON
    refused = await rig.auth.change_pin(
        CARD, Secret(pin), Secret(NEW_PIN), Secret(NEW_PIN), at("portal")
    )
    assert not refused.ok


async def test_a_wrong_pin_still_counts_and_the_old_pin_is_gone(rig: Rig) -> None:
    await issue(rig)
    assert (await rig.auth.authenticate(CARD, Secret(WRONG_PIN), at("sip2"))).outcome is (
        Outcome.BAD_PIN
    )
    assert rig.throttle.failures(CARD, rig.clock()) == 1
    old = await rig.auth.authenticate(CARD, Secret(DEMO_PIN), at("portal"))
    assert old.outcome is Outcome.BAD_PIN


def test_random_pins_follow_the_policy() -> None:
    policy = PinPolicy(min_length=4, max_length=6, blocklist=frozenset({"123456"}))
    pins = {one_time.random_pin(policy) for _ in range(200)}
    assert all(len(p) == 6 and policy.check(p).ok for p in pins)
    assert len(pins) > 150  # random, not a sequence


def test_every_front_end_has_its_must_change_answer() -> None:
    """The answers each front end gives `pin_must_change` (the texts docs/staff.md quotes)."""
    from bridge.core.patron import Decision
    from bridge.ldap.answers import bind_answer
    from bridge.ldap.messages import PPOLICY_CHANGE_AFTER_RESET
    from bridge.portal.answers import login_message, old_pin_message
    from bridge.radius.answers import answer

    refused = Decision(Outcome.PIN_MUST_CHANGE, reason=one_time.MUST_CHANGE_REASON)
    ldap = bind_answer(refused)
    assert ldap.code == 49 and "My Account" in ldap.diagnostic
    assert ldap.ppolicy_error == PPOLICY_CHANGE_AFTER_RESET
    radius = answer(refused, "reject")
    assert radius.code == 3 and "My Account" in radius.message
    assert login_message(Outcome.PIN_MUST_CHANGE) == ("login.must_change", 200)
    assert old_pin_message(Outcome.PIN_MUST_CHANGE) == ("old_pin", "login.must_change")


async def test_the_eap_and_federation_protocol_names_refuse_it(rig: Rig) -> None:
    """The names the RADIUS EAP, OIDC and SAML front ends put in their Context."""
    from bridge.federation.oidc import PROTOCOL as OIDC
    from bridge.radius.eap.frontend import PROTOCOL as EAP

    pin = await issue(rig)
    for protocol in (EAP, OIDC, "saml"):
        decision = await rig.auth.authenticate(CARD, Secret(pin), at(protocol))
        assert decision.outcome is Outcome.PIN_MUST_CHANGE
