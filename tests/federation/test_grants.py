"""Codes: single-use, short-lived, kept hashed; a replay revokes what the first use gave."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.federation.grants import Grants, Request, digest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REQUEST = Request("vendor", "https://rp.example.org/cb", frozenset({"openid"}), "s", "n", None)


def grants(clock: Clock) -> Grants:
    return Grants(clock, code_seconds=60, token_seconds=3600, request_seconds=900)


def test_code_is_single_use_and_stored_hashed() -> None:
    g = grants(Clock())
    code = g.issue_code(REQUEST, "sub", {"name": "A"}, 1000)
    assert code not in g._codes.items and digest(code) in g._codes.items
    grant = g.redeem(code)
    assert grant is not None and grant.subject == "sub"
    assert g.redeem(code) is None


def test_code_expires() -> None:
    clock = Clock()
    g = grants(clock)
    code = g.issue_code(REQUEST, "sub", {}, 1000)
    clock.now += 61
    assert g.redeem(code) is None


def test_replay_revokes_the_access_token() -> None:
    g = grants(Clock())
    code = g.issue_code(REQUEST, "sub", {}, 1000)
    grant = g.redeem(code)
    assert grant is not None
    token = g.issue_token(grant)
    assert g.token(token) is not None
    assert g.redeem(code) is None
    assert g.token(token) is None


def test_tokens_expire() -> None:
    clock = Clock()
    g = grants(clock)
    grant = g.redeem(g.issue_code(REQUEST, "sub", {}, 1000))
    assert grant is not None
    token = g.issue_token(grant)
    clock.now += 3601
    assert g.token(token) is None


def test_parked_requests_expire_and_finish() -> None:
    clock = Clock()
    g = grants(clock)
    rid = g.park(REQUEST)
    assert g.parked(rid) == REQUEST
    g.finish(rid)
    assert g.parked(rid) is None
    rid = g.park(REQUEST)
    clock.now += 901
    assert g.parked(rid) is None


@given(st.text(max_size=300))
def test_any_string_is_no_code_or_token(value: str) -> None:
    g = grants(Clock())
    g.issue_code(REQUEST, "sub", {}, 1000)
    assert g.redeem(value) is None
    assert g.token(value) is None
    assert g.parked(value) is None
