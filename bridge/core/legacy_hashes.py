"""PIN hashes imported from an ILS export, verified so a library can move to the bridge's store
without knowing anyone's PIN. Each is re-hashed into the peppered format on the next login.

Formats (prefix selects):
- `$2a$`/`$2b$`/`$2y$`: bcrypt of the PIN, as Koha stores `borrowers.password`.
- `{MD5}<hex>`: Koha's legacy unsalted MD5 (base64 in Koha; hex accepted too).
- `$evergreen$<salt>$<bcrypt>`: Evergreen's actor.passwd: bcrypt(md5(salt + md5(pin))).
- `$pbkdf2-sha512$<iterations>$<salt b64>$<hash b64>`: FOLIO's PBKDF2-HMAC-SHA512.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import bcrypt

from bridge.core.secret import Secret


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def verify(pin: Secret, stored: str) -> bool:
    raw = pin.reveal()
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        fixed = "$2b$" + stored[4:]
        try:
            return bcrypt.checkpw(raw, fixed.encode("ascii"))
        except ValueError:
            return False
    if stored.startswith("{MD5}"):
        want = stored[5:]
        digest = hashlib.md5(raw, usedforsecurity=False).digest()
        candidates = (digest.hex(), base64.b64encode(digest).decode().rstrip("="))
        return any(hmac.compare_digest(c, want.rstrip("=")) for c in candidates)
    if stored.startswith("$evergreen$"):
        try:
            _, _, salt, crypted = stored.split("$", 3)
        except ValueError:
            return False
        inner = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        outer = hashlib.md5((salt + inner).encode(), usedforsecurity=False).hexdigest()
        try:
            return bcrypt.checkpw(outer.encode(), ("$" + crypted).encode("ascii"))
        except ValueError:
            return False
    if stored.startswith("$pbkdf2-sha512$"):
        try:
            _, _, iterations, salt_b64, hash_b64 = stored.split("$")
            expected = _b64decode(hash_b64)
            got = hashlib.pbkdf2_hmac(
                "sha512", raw, _b64decode(salt_b64), int(iterations), len(expected)
            )
        except ValueError:
            return False
        return hmac.compare_digest(got, expected)
    return False
