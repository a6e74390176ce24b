"""One-time PINs: a random PIN staff issue at the desk, which must be changed at the next My
Account sign-in.

Which front ends take one: only the PIN pages (`ONE_TIME_PROTOCOLS`), and there only to set a
new PIN. SIP2, LDAP, RADIUS/EAP and OIDC/SAML refuse it with `Outcome.PIN_MUST_CHANGE` (each
front end's "change your PIN at My Account" answer) and the audit reason `one-time PIN: change
at My Account`. Why not let a self-check take it: the slip the patron carries home is printed,
and a PIN that opens every service should be one only the patron knows. A right one-time PIN is
not a wrong guess (it never counts towards a lock) but is never cached either, so no cached
answer can accept it on another protocol. It expires `PinPolicy.one_time_hours` after it was
set, everywhere (then `one-time PIN expired`). The mark is the stores' `needs_reset` flag, the
one an import sets on a card left without a PIN: a card with a PIN and that flag holds a
one-time PIN, and every PIN change clears it.
"""

from __future__ import annotations

import datetime as dt
import secrets

from bridge.core.patron import Decision, Outcome
from bridge.core.pin import PinPolicy
from bridge.core.store import Verification

#: The front ends that accept a one-time PIN (to force its change).
ONE_TIME_PROTOCOLS = frozenset({"portal"})

MUST_CHANGE_REASON = "one-time PIN: change at My Account"
EXPIRED_REASON = "one-time PIN expired"


def refusal(
    verification: Verification, protocol: str, policy: PinPolicy, now: float
) -> Decision | None:
    """For a right PIN: the refusal a one-time PIN earns on this front end, or None when the
    PIN is an ordinary one or this front end may take it (the decision then has `must_change`)."""
    since = verification.one_time_since
    if since is None:
        return None
    patron = verification.patron
    age = now - since.timestamp()
    if age > policy.one_time_hours * 3600.0:
        return Decision(Outcome.PIN_MUST_CHANGE, patron, EXPIRED_REASON)
    if protocol not in ONE_TIME_PROTOCOLS:
        return Decision(Outcome.PIN_MUST_CHANGE, patron, MUST_CHANGE_REASON)
    return None


def must_change(decision: Decision) -> Decision:
    """An accepted one-time PIN at the PIN pages: accepted, marked `must_change`."""
    if decision.outcome is not Outcome.ACCEPTED:
        return decision
    return Decision(
        Outcome.ACCEPTED, decision.patron, "verified one-time PIN", pin_ok=True, must_change=True
    )


def random_pin(policy: PinPolicy) -> str:
    """A random PIN of the policy's longest length that the policy accepts (the CSPRNG, so the
    slip is the only copy anyone can know)."""
    length = max(policy.max_length, policy.min_length)
    while True:
        pin = "".join(secrets.choice("0123456789") for _ in range(length))
        if policy.check(pin).ok:
            return pin


def expires_at(since: dt.datetime, policy: PinPolicy) -> dt.datetime:
    return since + dt.timedelta(hours=policy.one_time_hours)
