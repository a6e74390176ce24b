"""Every (role, action) pair, as the table says it and as the server enforces it."""

from __future__ import annotations

import pytest

from bridge.staff.roles import NEEDS, Action, Role, allowed, parse_role

EXPECTED = {
    Role.DESK: {Action.LOOK_UP, Action.RESET_PIN, Action.CLEAR_LOCK, Action.RESEND_LINK},
    Role.SUPERVISOR: {
        Action.LOOK_UP,
        Action.RESET_PIN,
        Action.CLEAR_LOCK,
        Action.RESEND_LINK,
        Action.BLOCK,
        Action.UNBLOCK,
        Action.NEW_CARD,
    },
    Role.ADMIN: set(Action),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_every_permission(role: Role, action: Action) -> None:
    assert allowed(role, action) is (action in EXPECTED[role])


def test_every_action_has_a_rule() -> None:
    assert set(NEEDS) == set(Action)


def test_parse_role() -> None:
    assert parse_role("desk") is Role.DESK
    assert parse_role("DESK") is None
    assert parse_role("root") is None
