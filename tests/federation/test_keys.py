"""Signing keys: created 0600 on first use, rotated with the old key published until its
tokens have expired, then dropped."""

from __future__ import annotations

import json
from pathlib import Path

from joserfc import jwt

from bridge.federation.keys import ALG, KeyRing, read_or_create, rotate


def test_created_private_to_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keys.json"
    keys = read_or_create(path)
    assert len(keys) == 1
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_or_create(path)[0].kid == keys[0].kid  # read back, not made again


def test_rotation_keeps_the_old_key_until_its_tokens_expire(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path, keep_seconds=600)
    old = ring.signing
    token = jwt.encode({"alg": ALG, "kid": old.kid}, {"sub": "x"}, old)
    fresh = rotate(path, 600, now=1_000_000_000_000.0 - 100)  # far future clock: retired "now"
    assert ring.signing.kid == fresh.kid  # the running ring sees the file change
    published = {k["kid"] for k in ring.jwks(now=1_000_000_000_000.0)["keys"]}
    assert published == {old.kid, fresh.kid}
    jwt.decode(token, ring.key_set())
    later = {k["kid"] for k in ring.jwks(now=1_000_000_000_000.0 + 600)["keys"]}
    assert later == {fresh.kid}
    rotate(path, 600, now=1_000_000_000_000.0 + 600)
    stored = json.loads(path.read_text())["keys"]
    assert old.kid not in {k["kid"] for k in stored}  # dropped at the next rotation
    assert path.stat().st_mode & 0o777 == 0o600


def test_jwks_has_no_private_parts(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json", keep_seconds=60)
    for key in ring.jwks()["keys"]:
        assert set(key) <= {"kty", "n", "e", "kid", "alg", "use"}
