"""`Secret`: any str or bytes is taken without raising (an exception could carry the value
into a traceback), never shown, and compared in constant time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.pin import PinPolicy
from bridge.core.secret import _MASK as MASK
from bridge.core.secret import Secret


def test_a_lone_surrogate_is_malformed_not_an_exception() -> None:
    """Hypothesis found it: Secret("\\ud800") raised UnicodeEncodeError."""
    secret = Secret("12\ud8004")
    assert secret.text() is None
    assert secret.matches("12\ud8004") and not secret.matches("1234")
    verdict = PinPolicy().check(secret)
    assert not verdict.ok and verdict.reason


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
def test_property_any_value_is_taken_and_never_shown(value: str | bytes) -> None:
    secret = Secret(value)
    assert secret.matches(value)
    assert (repr(secret), str(secret), f"{secret:>10}") == (f"Secret({MASK})", MASK, MASK)
    if isinstance(value, str):
        assert secret.text() in (value, None)
