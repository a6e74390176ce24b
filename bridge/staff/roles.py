"""Who may do what at the desk: one table, checked on the server for every page and action.

desk: look up a card, reset its PIN after the ID check, clear a lock, resend a reset link.
supervisor: also block and unblock, and make a new card with its first PIN.
admin: everything a supervisor may (and, later, manage staff accounts).
A hidden button is a courtesy; this table is the rule.
"""

from __future__ import annotations

import enum


class Role(enum.Enum):
    DESK = "desk"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Action(enum.Enum):
    LOOK_UP = "look_up"
    RESET_PIN = "reset_pin"
    CLEAR_LOCK = "clear_lock"
    RESEND_LINK = "resend_link"
    BLOCK = "block"
    UNBLOCK = "unblock"
    NEW_CARD = "new_card"
    MANAGE_STAFF = "manage_staff"


_RANK = {Role.DESK: 0, Role.SUPERVISOR: 1, Role.ADMIN: 2}

#: The least role each action needs.
NEEDS: dict[Action, Role] = {
    Action.LOOK_UP: Role.DESK,
    Action.RESET_PIN: Role.DESK,
    Action.CLEAR_LOCK: Role.DESK,
    Action.RESEND_LINK: Role.DESK,
    Action.BLOCK: Role.SUPERVISOR,
    Action.UNBLOCK: Role.SUPERVISOR,
    Action.NEW_CARD: Role.SUPERVISOR,
    Action.MANAGE_STAFF: Role.ADMIN,
}


def allowed(role: Role, action: Action) -> bool:
    return _RANK[role] >= _RANK[NEEDS[action]]


def parse_role(value: str) -> Role | None:
    try:
        return Role(value)
    except ValueError:
        return None
