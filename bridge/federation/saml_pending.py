"""SAML sign-ins waiting for the PIN form, kept in the `[state]` backend (`FederationState`)
like the OpenID Connect ones: an AuthnRequest checked on one worker or host is finished on
whichever the patron's form post reaches, and a restart of a host with a shared or file state
loses none.

Stored under the SHA-256 of the request id (the id is in the form, the digest at rest), as the
few strings pysaml2's `response_args` holds (the NameIDPolicy element as its XML). Taking it
for the answer goes through `redeem`, atomic on the server: one post wins, a second (on any
host, at any moment) finds it used and is told the request expired. A wrong PIN leaves it
parked for the next try.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from saml2.samlp import name_id_policy_from_string

from bridge.federation.grants import digest
from bridge.federation.saml_server import Pending
from bridge.federation.state import FederationState, Taken

TAKEN_SECONDS = 1.0  # the copy `redeem` stores under the taken mark is not read again


class _Stored(msgspec.Struct, frozen=True):
    sp: str
    relay_state: str
    args: dict[str, str]  # response_args without the NameIDPolicy
    name_id_policy: str | None = None


_decode = msgspec.json.Decoder(_Stored).decode
_encode = msgspec.json.Encoder().encode


def _key(rid: str) -> str:
    return "samlreq:" + digest(rid)


def _text(pending: Pending) -> str:
    args = {k: str(v) for k, v in pending.resp_args.items() if k != "name_id_policy"}
    policy = pending.resp_args.get("name_id_policy")
    xml = None if policy is None else str(policy.to_string(), "utf-8")
    return _encode(_Stored(pending.sp, pending.relay_state, args, xml)).decode()


def _pending(value: str) -> Pending:
    stored = _decode(value)
    args: dict[str, Any] = dict(stored.args)
    if stored.name_id_policy is not None:
        args["name_id_policy"] = name_id_policy_from_string(stored.name_id_policy)
    elif "sp_entity_id" in args:  # an AuthnRequest without one: pysaml2 expects the key
        args["name_id_policy"] = None
    return Pending(stored.sp, args, stored.relay_state)


async def park(state: FederationState, pending: Pending, seconds: float) -> str:
    """Keep a checked AuthnRequest while the patron signs in; the id goes in the form."""
    rid = secrets.token_urlsafe(24)
    await state.put(_key(rid), _text(pending), seconds)
    return rid


async def parked(state: FederationState, rid: str) -> Pending | None:
    """The request still waiting under `rid` (None: unknown, expired or already answered)."""
    value = await state.get(_key(rid)) if rid else None
    return None if value is None else _pending(value)


async def take(state: FederationState, rid: str) -> Pending | None:
    """Take the request once, for the answer; None when another post took it first."""
    if not rid:
        return None
    taken = await state.redeem(_key(rid), "samltaken:" + digest(rid), TAKEN_SECONDS)
    if taken.outcome is not Taken.TAKEN or taken.value is None:
        return None
    return _pending(taken.value)
