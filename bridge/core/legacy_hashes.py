"""PIN hashes imported from an ILS export, verified so a library can move to the bridge's store
without knowing anyone's PIN. Each is re-hashed into the peppered format on the next login.

Formats (prefix selects):
- `$2a$`/`$2b$`/`$2y$`: bcrypt of the PIN, as Koha stores `borrowers.password`; like Koha's
  Crypt::Eksblowfish, only the first 72 bytes of a longer passphrase count.
- `{MD5}<hex>`: Koha's legacy unsalted MD5 (base64 in Koha; hex accepted too).
- `$evergreen$<salt>$<bcrypt>`: Evergreen's actor.passwd: bcrypt(md5(salt + md5(pin))). The
  salt is itself a bcrypt salt (`$2a$10$` + 22 characters, from `gen_salt('bf', 10)`), so it
  contains `$`: the crypt value is the last 60 characters, the salt everything before them.
- `$pbkdf2-sha512$<iterations>$<salt b64>$<hash b64>`: FOLIO's PBKDF2-HMAC-SHA512 (FOLIO's salt
  is the user's UUID as text, its hash 8 bytes); passlib's `.`-for-`+` base64 is accepted too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt

from bridge.core.secret import Secret

_BCRYPT_LEN = 60
# bcrypt's key schedule reads at most 72 bytes of the password. Perl's Crypt::Eksblowfish
# (Koha's `hash_password`/`checkpw_hash`) and crypt(3) silently use the first 72 bytes; the
# Python bcrypt package (5.x) raises on longer input instead. Truncating gives the answer the
# ILS itself gives for a long passphrase.
_BCRYPT_MAX_KEY = 72
_MAX_PBKDF2_ITERATIONS = 10_000_000


def _b64decode(text: str) -> bytes:
    text = text.replace(".", "+")  # passlib's adapted base64
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# Every stored form the core hasher can verify: its own (argon2id, scrypt) and the imported ones.
KNOWN_PREFIXES = (
    "$argon2id$",
    "$scrypt$",
    "$2a$",
    "$2b$",
    "$2y$",
    "{MD5}",
    "$evergreen$",
    "$pbkdf2-sha512$",
)


def recognised(stored: str) -> bool:
    """True when `stored` names a form the bridge verifies, so an import can refuse a column
    of something else (a typo in the export query would otherwise lock every patron out)."""
    return stored.startswith(KNOWN_PREFIXES)


def _bcrypt(raw: bytes, stored: str) -> bool:
    """bcrypt check of a 60-character `$2?$NN$...` value; a cost above 2^16 rounds (Koha uses
    2^8, Evergreen 2^10) is refused rather than letting one imported row stall a KDF worker."""
    if len(stored) != _BCRYPT_LEN or not stored[4:6].isdigit() or int(stored[4:6]) > 16:
        return False
    try:
        return bcrypt.checkpw(raw[:_BCRYPT_MAX_KEY], ("$2b$" + stored[4:]).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False


def verify(pin: Secret, stored: str) -> bool:
    raw = pin.reveal()
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        return _bcrypt(raw, stored)
    if stored.startswith("{MD5}"):
        # Compared as bytes: compare_digest refuses non-ASCII str (a corrupt export row).
        want = stored[5:].rstrip("=").encode("utf-8", "surrogatepass")
        digest = hashlib.md5(raw, usedforsecurity=False).digest()
        candidates = (digest.hex().encode(), base64.b64encode(digest).rstrip(b"="))
        return any(hmac.compare_digest(c, want) for c in candidates)
    if stored.startswith("$evergreen$"):
        body = stored[len("$evergreen$") :]
        crypted, salt = body[-_BCRYPT_LEN:], body[: -_BCRYPT_LEN - 1]
        if len(body) <= _BCRYPT_LEN or body[-_BCRYPT_LEN - 1] != "$" or not salt:
            return False
        inner = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        outer = hashlib.md5((salt + inner).encode(), usedforsecurity=False).hexdigest()
        return _bcrypt(outer.encode(), crypted)
    if stored.startswith("$pbkdf2-sha512$"):
        try:
            _, _, iterations, salt_b64, hash_b64 = stored.split("$")
            expected = _b64decode(hash_b64)
            if not expected or not 0 < int(iterations) <= _MAX_PBKDF2_ITERATIONS:
                return False
            got = hashlib.pbkdf2_hmac(
                "sha512", raw, _b64decode(salt_b64), int(iterations), len(expected)
            )
        except ValueError:
            return False
        return hmac.compare_digest(got, expected)
    return False
