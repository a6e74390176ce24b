"""The library's PIN rule (unit and property tests) and the PinHasher."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.pin import (
    HashFormatError,
    KdfParams,
    PinHasher,
    PinPolicy,
    load_blocklist,
    read_or_create_pepper,
)
from bridge.core.secret import Secret
from tests.core.support import FAST, FAST_SCRYPT, fast_hasher
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN

POLICY = PinPolicy()

# -- the library's rule -----------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["5961", DEMO_PIN, NEW_PIN, "0123", "1123", "1221", "9870"])
def test_accepted(pin: str) -> None:
    assert POLICY.check(Secret(pin)).ok
    assert POLICY.check(pin).ok  # plain text too (pin check)


@pytest.mark.parametrize(
    ("pin", "code", "says"),
    [
        ("1212", "repeating", "repeating number"),
        ("2222", "repeating", "repeating number"),
        ("0000", "repeating", "repeating number"),
        ("12a4", "not_digits", "numbers 0-9 only"),
        ("\u0660\u0661\u0662\u0663", "not_digits", "numbers 0-9 only"),  # Arabic-Indic digits
        ("\uff15\uff19\uff16\uff11", "not_digits", "numbers 0-9 only"),  # full-width digits
        ("123", "length", "exactly 4 digits"),
        ("12345", "length", "exactly 4 digits"),
        ("59 1", "not_digits", "no letters, spaces or symbols"),
        ("596-", "not_digits", "no letters"),
        ("5961\n", "not_digits", "numbers 0-9 only"),
        ("", "empty", "enter a PIN"),
    ],
)
def test_refused_with_reason(pin: str, code: str, says: str) -> None:
    result = POLICY.check(Secret(pin))
    assert not result.ok and result.code == code
    assert says in result.reason
    assert pin in ("1212", "2222", "") or pin not in result.reason  # never repeats the PIN
    assert DEMO_PIN not in result.reason  # nor names a real PIN (the demo patrons use it)


def test_non_utf8_bytes_refused() -> None:
    result = POLICY.check(Secret(b"\xff\xfe\xfd\xfc"))
    assert not result.ok and result.code == "empty"


def test_blocklist(tmp_path: Path) -> None:
    path = tmp_path / "common.txt"
    path.write_text("# most common PINs\n1234\n\n2580  # keypad column\n")
    blocklist = load_blocklist(path)
    assert blocklist == frozenset({"1234", "2580"})
    policy = PinPolicy(blocklist=blocklist)
    result = policy.check(Secret("1234"))
    assert not result.ok and result.code == "common" and "too common" in result.reason
    assert policy.check(Secret("5961")).ok


def test_same_as_old() -> None:
    result = POLICY.check(Secret(NEW_PIN), old=Secret(NEW_PIN))
    assert not result.ok and result.code == "same_as_old" and "different" in result.reason
    assert POLICY.check(Secret(NEW_PIN), old=Secret(DEMO_PIN)).ok
    assert POLICY.check(Secret(NEW_PIN), old=Secret(b"\xff")).ok


def test_configurable_length() -> None:
    policy = PinPolicy(min_length=4, max_length=6)
    assert policy.check("596142").ok
    assert not policy.check("123123").ok  # a repeated unit of three
    result = policy.check("123")
    assert result.code == "length" and "4 to 6 digits" in result.reason
    assert PinPolicy(forbid_repeats=False).check("2222").ok


# -- properties -------------------------------------------------------------------------------

DIGITS = "0123456789"


@given(st.text(alphabet=DIGITS, min_size=4, max_size=4))
def test_property_four_ascii_digits(pin: str) -> None:
    """Any four ASCII digits are accepted unless all the same or ABAB."""
    all_same = len(set(pin)) == 1
    abab = pin[:2] == pin[2:]
    assert POLICY.check(Secret(pin)).ok is not (all_same or abab)


@given(
    st.text(alphabet=DIGITS, min_size=0, max_size=3),
    st.one_of(
        st.characters(blacklist_characters=DIGITS),
        # Unicode digits that str.isdigit() accepts: Arabic-Indic, Devanagari, full-width, ...
        st.characters(whitelist_categories=("Nd",), blacklist_characters=DIGITS),
    ),
    st.text(min_size=0, max_size=3),
)
def test_property_any_non_ascii_digit_refused(before: str, bad: str, after: str) -> None:
    pin = before + bad + after
    result = POLICY.check(Secret(pin))
    assert not result.ok and result.reason


@given(st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b)))
def test_property_never_raises(value: str | bytes) -> None:
    secret = Secret(value)
    result = POLICY.check(secret, old=Secret(value))
    assert isinstance(result.ok, bool)
    assert result.ok or result.reason


# -- the hasher -------------------------------------------------------------------------------


@pytest.fixture(params=[FAST, FAST_SCRYPT], ids=["argon2id", "scrypt"])
def hasher(request: pytest.FixtureRequest) -> PinHasher:
    h = fast_hasher(request.param)
    request.addfinalizer(h.close)
    return h


async def test_round_trip(hasher: PinHasher) -> None:
    stored = await hasher.hash(Secret(DEMO_PIN))
    prefix = "$argon2id$" if hasher.params.algorithm == "argon2id" else "$scrypt$"
    assert stored.startswith(prefix)
    assert DEMO_PIN not in stored
    ok = await hasher.verify(Secret(DEMO_PIN), stored)
    assert ok.ok and not ok.needs_rehash
    wrong = await hasher.verify(Secret(WRONG_PIN), stored)
    assert not wrong.ok and not wrong.needs_rehash
    # Salted: the same PIN never hashes the same twice.
    assert await hasher.hash(Secret(DEMO_PIN)) != stored


async def test_verification_runs_off_the_event_loop(hasher: PinHasher) -> None:
    stored = hasher.hash_sync(Secret(DEMO_PIN))
    loop_thread: list[str] = []
    inner = hasher.verify_sync

    def spy(pin: Secret, value: str):  # type: ignore[no-untyped-def]
        import threading

        loop_thread.append(threading.current_thread().name)
        return inner(pin, value)

    hasher.verify_sync = spy  # type: ignore[method-assign]
    await asyncio.gather(*(hasher.verify(Secret(DEMO_PIN), stored) for _ in range(4)))
    assert loop_thread and all(name.startswith("kdf") for name in loop_thread)


@pytest.mark.parametrize(
    "stored",
    [
        "$argon2id$v=19$m=8192,t=1,p=1$c2VjcmV0c2FsdA$SECRETSECRET!!",
        "$argon2id$garbage",
        "$argon2id$v=19$m=99999999,t=1,p=1$c2VjcmV0c2FsdA$aGFzaGhhc2hoYXNo",
        "$scrypt$ln=10,r=8$c2FsdA$aGFzaA",
        "$scrypt$ln=99,r=8,p=1$c2FsdA$aGFzaA",
        "$scrypt$ln=ten,r=8,p=1$c2FsdA$aGFzaA",
        "$scrypt$ln=10,r=8,p=1$!!!$aGFzaA",
        "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0$",
        "$scrypt$ln=10,r=8,p=1$$aGFzaGhhc2g",
    ],
)
def test_malformed_hash_raises_without_quoting_it(stored: str) -> None:
    h = fast_hasher()
    try:
        with pytest.raises(HashFormatError) as info:
            h.verify_sync(Secret(DEMO_PIN), stored)
        message = str(info.value)
        for part in stored.split("$")[3:]:  # parameters, salt and hash: none is quoted
            assert not part or part not in message
        assert DEMO_PIN not in message
    finally:
        h.close()


def test_unknown_hash_form_is_no_match() -> None:
    h = fast_hasher()
    try:
        check = h.verify_sync(Secret(DEMO_PIN), "plaintext-or-garbage")
        assert not check.ok and not check.needs_rehash
    finally:
        h.close()


async def test_needs_rehash_when_params_change() -> None:
    pepper = os.urandom(32)
    old, new = (
        fast_hasher(pepper=pepper),
        fast_hasher(KdfParams(argon2_memory_kib=8192, argon2_iterations=2), pepper=pepper),
    )
    old_scrypt = fast_hasher(FAST_SCRYPT, pepper=pepper)
    new_scrypt = fast_hasher(KdfParams("scrypt", scrypt_log2_n=11), pepper=pepper)
    try:
        stored = await old.hash(Secret(DEMO_PIN))
        assert (await new.verify(Secret(DEMO_PIN), stored)).needs_rehash
        assert not (await old.verify(Secret(DEMO_PIN), stored)).needs_rehash
        assert not (await new.verify(Secret(WRONG_PIN), stored)).needs_rehash
        stored_s = await old_scrypt.hash(Secret(DEMO_PIN))
        assert (await new_scrypt.verify(Secret(DEMO_PIN), stored_s)).needs_rehash
        assert (await new.verify(Secret(DEMO_PIN), stored_s)).needs_rehash  # scrypt → argon2id
        assert (await old_scrypt.verify(Secret(DEMO_PIN), stored)).needs_rehash  # and back
    finally:
        for h in (old, new, old_scrypt, new_scrypt):
            h.close()


async def test_different_pepper_fails(hasher: PinHasher) -> None:
    stored = await hasher.hash(Secret(DEMO_PIN))
    other = fast_hasher(hasher.params)
    try:
        assert not (await other.verify(Secret(DEMO_PIN), stored)).ok
    finally:
        other.close()


async def test_dummy_verify_does_kdf_work(hasher: PinHasher) -> None:
    calls: list[str] = []
    inner = hasher.verify_sync

    def spy(pin: Secret, value: str):  # type: ignore[no-untyped-def]
        calls.append(value[:8])
        return inner(pin, value)

    hasher.verify_sync = spy  # type: ignore[method-assign]
    await hasher.dummy_verify(Secret(DEMO_PIN))
    assert calls == [hasher._dummy[:8]]


def test_pepper_file_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "pepper.key"
    first = read_or_create_pepper(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_or_create_pepper(path) == first
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    with pytest.raises(HashFormatError) as info:
        read_or_create_pepper(short)
    assert "xxxxxxxx" not in str(info.value)


def test_hasher_repr_hides_pepper() -> None:
    pepper = b"S" * 32
    h = PinHasher(pepper, FAST, workers=1)
    try:
        assert "SSSS" not in repr(h) and "SSSS" not in str(h)
        assert h.derived_key("audit") != h.derived_key("tokens")
        assert pepper not in h.derived_key("audit")
    finally:
        h.close()
