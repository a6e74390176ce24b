"""The optional second factor for local staff accounts: a TOTP code (RFC 6238, 30-second steps,
six digits) from an authenticator app, checked with pyotp.

One step either side is accepted (desk PC clocks drift), and a code is good once: the last step
each account used is remembered, so a code read over a shoulder cannot be replayed in the same
minute. The memory is per process and bounded by the number of staff accounts.
"""

from __future__ import annotations

import hmac

import pyotp

STEP = 30


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, name: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=issuer)


class TotpChecker:
    def __init__(self) -> None:
        self._last_step: dict[str, int] = {}

    def check(self, name: str, secret: str, code: str, now: float) -> bool:
        """Whether `code` is this account's code for now (±1 step) and was not used before."""
        code = code.strip().replace(" ", "")
        if len(code) != 6 or not code.isascii() or not code.isdigit():
            return False
        totp = pyotp.TOTP(secret)
        step_now = int(now // STEP)
        for step in (step_now - 1, step_now, step_now + 1):
            if hmac.compare_digest(totp.at(step * STEP), code):
                if step <= self._last_step.get(name, -1):
                    return False  # already used
                self._last_step[name] = step
                return True
        return False
