"""Imported ILS hashes: each format verifies the right PIN, refuses a wrong one, and treats
anything malformed as "no match" (never an exception that would become a 500)."""

from __future__ import annotations

import base64
import hashlib
import os

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core import legacy_hashes
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from tests.eksblowfish import koha_perl_bcrypt
from tests.pins import DEMO_PIN, WRONG_PIN


def check(stored: str, pin: str = DEMO_PIN) -> bool:
    return legacy_hashes.verify(Secret(pin), stored)


def koha_bcrypt(pin: str, prefix: bytes = b"2a") -> str:
    return bcrypt.hashpw(pin.encode(), bcrypt.gensalt(8, prefix=prefix)).decode()


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_koha_bcrypt(prefix: bytes) -> None:
    stored = koha_bcrypt(DEMO_PIN, prefix)
    assert check(stored) and not check(stored, WRONG_PIN)


def test_bcrypt_2y_from_php_systems() -> None:
    stored = "$2y$" + koha_bcrypt(DEMO_PIN)[4:]
    assert check(stored) and not check(stored, WRONG_PIN)


def test_koha_legacy_md5_base64_and_hex() -> None:
    digest = hashlib.md5(DEMO_PIN.encode()).digest()
    b64 = base64.b64encode(digest).decode().rstrip("=")  # Perl's md5_base64: 22 chars
    assert len(b64) == 22
    for stored in ("{MD5}" + b64, "{MD5}" + digest.hex()):
        assert check(stored) and not check(stored, WRONG_PIN)


def evergreen(pin: str, cost: int = 4) -> str:
    """actor.passwd: salt = gen_salt('bf'), passwd = crypt(md5(salt || md5(pin)), salt)."""
    salt = bcrypt.gensalt(cost, prefix=b"2a").decode()
    inner = hashlib.md5(pin.encode()).hexdigest()
    outer = hashlib.md5((salt + inner).encode()).hexdigest()
    return f"$evergreen${salt}${bcrypt.hashpw(outer.encode(), salt.encode()).decode()}"


def test_evergreen_salt_contains_dollars() -> None:
    """Regression: Evergreen's salt is a bcrypt salt (`$2a$10$...`); splitting on `$` lost it."""
    stored = evergreen(DEMO_PIN)
    assert stored.startswith("$evergreen$$2a$04$")
    assert check(stored) and not check(stored, WRONG_PIN)


def test_evergreen_needs_the_right_salt() -> None:
    stored = evergreen(DEMO_PIN)
    body = stored[len("$evergreen$") :]
    other_salt = bcrypt.gensalt(4, prefix=b"2a").decode()
    assert not check(f"$evergreen${other_salt}${body[-60:]}")


def folio(pin: str, user_id: str, iterations: int = 150000) -> str:
    digest = hashlib.pbkdf2_hmac("sha512", pin.encode(), user_id.encode(), iterations, 8)
    salt = base64.b64encode(user_id.encode()).decode()
    return f"$pbkdf2-sha512${iterations}${salt}${base64.b64encode(digest).decode()}"


def test_folio_pbkdf2_sha512() -> None:
    stored = folio(DEMO_PIN, "8f5f1b4e-6c7a-4c2e-9d0e-2b7d3c6f1a90", iterations=1000)
    assert check(stored) and not check(stored, WRONG_PIN)


def test_passlib_adapted_base64() -> None:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha512", DEMO_PIN.encode(), salt, 1000)

    def ab64(data: bytes) -> str:
        return base64.b64encode(data).decode().rstrip("=").replace("+", ".")

    stored = f"$pbkdf2-sha512$1000${ab64(salt)}${ab64(digest)}"
    assert check(stored) and not check(stored, WRONG_PIN)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "!",
        "plain",
        "$2a$08$tooshort",
        "{MD5}",
        "$evergreen$",
        "$evergreen$nosalt",
        "$evergreen$" + "x" * 61,
        "$pbkdf2-sha512$",
        "$pbkdf2-sha512$abc$c2FsdA$aGFzaA",
        "$pbkdf2-sha512$0$c2FsdA$aGFzaA",
        "$pbkdf2-sha512$99999999999$c2FsdA$aGFzaA",
        "$pbkdf2-sha512$1000$!!!$aGFzaA",
        "$pbkdf2-sha512$1000$c2FsdA$",
    ],
)
def test_malformed_is_no_match(stored: str) -> None:
    assert check(stored) is False


async def test_hasher_reports_every_legacy_form_for_rehash() -> None:
    hasher = PinHasher(os.urandom(32), KdfParams(argon2_memory_kib=8192, argon2_iterations=1))
    try:
        digest = hashlib.md5(DEMO_PIN.encode()).digest()
        for stored in (
            koha_bcrypt(DEMO_PIN),
            "{MD5}" + base64.b64encode(digest).decode(),
            evergreen(DEMO_PIN),
            folio(DEMO_PIN, "u-1", iterations=1000),
        ):
            right = await hasher.verify(Secret(DEMO_PIN), stored)
            assert right.ok and right.needs_rehash
            wrong = await hasher.verify(Secret(WRONG_PIN), stored)
            assert not wrong.ok and not wrong.needs_rehash
    finally:
        hasher.close()


def test_recognised_forms() -> None:
    digest = base64.b64encode(hashlib.md5(DEMO_PIN.encode()).digest()).decode()
    for stored in (
        koha_bcrypt(DEMO_PIN),
        "{MD5}" + digest,
        evergreen(DEMO_PIN),
        folio(DEMO_PIN, "u", 1000),
        "$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA",
        "$scrypt$ln=14,r=8,p=1$c2FsdA$aGFzaA",
    ):
        assert legacy_hashes.recognised(stored), stored[:12]
    for stored in ("", "!", digest, "md5:abc", "$1$salt$hash", "$6$salt$hash"):
        assert not legacy_hashes.recognised(stored)


def test_absurd_bcrypt_cost_is_refused_not_run() -> None:
    stored = koha_bcrypt(DEMO_PIN)
    assert not check(stored[:4] + "31" + stored[6:])  # 2^31 rounds would stall a worker


PREFIXES = st.sampled_from(["", *legacy_hashes.KNOWN_PREFIXES, "$evergreen$$2a$10$"])


@settings(max_examples=300, deadline=None)
@given(pin=st.binary(max_size=200), prefix=PREFIXES, rest=st.text(max_size=120))
def test_property_anything_is_a_bool(pin: bytes, prefix: str, rest: str) -> None:
    """Whatever an export put in the column, verification answers True or False."""
    assert legacy_hashes.verify(Secret(pin), prefix + rest) in (True, False)


# An 87-byte passphrase (86 characters, one of them two bytes in UTF-8): Koha accepts it, and
# Eksblowfish hashes only its first 72 bytes.
PASSPHRASE = (
    "Bücherei-Passphrase: the seventh shelf from the left holds the annual reports, 1987-99"
)
assert len(PASSPHRASE.encode()) == 87


def with_byte(text: str, index: int) -> str:
    """`text` with the character at `index` (an ASCII one) changed."""
    return text[:index] + ("X" if text[index] != "X" else "Y") + text[index + 1 :]


def test_long_passphrase_hashed_by_kohas_eksblowfish() -> None:
    """A $2a$ hash made by Perl's Crypt::Eksblowfish::Bcrypt (Koha's hash_password) of an
    87-byte passphrase verifies; like Koha, bytes after the 72nd do not count, bytes before do
    (the bcrypt package alone raises on more than 72 bytes, which used to refuse the patron)."""
    stored = koha_perl_bcrypt(PASSPHRASE.encode())
    assert check(stored, PASSPHRASE)
    assert check(stored, with_byte(PASSPHRASE, 80))  # byte 81 of 87: beyond Koha's 72
    assert check(stored, PASSPHRASE[:71])  # 72 bytes (one character is two): the same key
    assert not check(stored, PASSPHRASE[:70])
    assert not check(stored, with_byte(PASSPHRASE, 5))


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_python_bcrypt_of_72_bytes_matches_longer_input(prefix: bytes) -> None:
    key = ("x" * 72).encode()
    stored = bcrypt.hashpw(key, bcrypt.gensalt(4, prefix=prefix)).decode()
    assert check(stored, "x" * 100) and not check(stored, "x" * 71)
