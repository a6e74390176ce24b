"""The provider's signing keys: created on first start, rotated by `patron-bridge oidc rotate-key`.

One JSON file (mode 0600) holds every key still needed: the newest signs; a retired key stays
published in the JWKS until every token it signed has expired (its retirement time plus the
longest token lifetime), then it is dropped at the next rotation. The running daemon notices a
rotation by the file's modification time, so no restart is needed. RS256: the algorithm every
OpenID Connect relying party must support.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import KeyParameters, KeySet, RSAKey

ALG = "RS256"


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    created: float
    retired: float | None
    key: RSAKey


def _new_key(now: float) -> StoredKey:
    kid = secrets.token_urlsafe(12)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": ALG, "use": "sig"})
    return StoredKey(kid, now, None, key)


def _dump(keys: list[StoredKey]) -> str:
    return json.dumps(
        {
            "keys": [
                {
                    "kid": k.kid,
                    "created": k.created,
                    "retired": k.retired,
                    "pem": k.key.as_pem(private=True).decode(),
                }
                for k in keys
            ]
        }
    )


def _load(text: str) -> list[StoredKey]:
    data = json.loads(text)
    out = []
    for item in data["keys"]:
        params: KeyParameters = {"kid": str(item["kid"]), "alg": ALG, "use": "sig"}
        key = RSAKey.import_key(item["pem"].encode(), parameters=params)
        retired = item.get("retired")
        out.append(StoredKey(str(item["kid"]), float(item["created"]), retired, key))
    return out


def write_keys(path: Path, keys: list[StoredKey]) -> None:
    """Write atomically, never readable by anyone but the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_dump(keys))
    os.replace(tmp, path)


def read_or_create(path: Path, now: float | None = None) -> list[StoredKey]:
    if path.exists():
        return _load(path.read_text(encoding="utf-8"))
    keys = [_new_key(time.time() if now is None else now)]
    write_keys(path, keys)
    return keys


def rotate(path: Path, keep_seconds: float, now: float | None = None) -> StoredKey:
    """Retire the signing key, add a new one, drop retired keys whose tokens have all expired."""
    now = time.time() if now is None else now
    keys = read_or_create(path, now)
    kept = [
        k if k.retired is not None else StoredKey(k.kid, k.created, now, k.key)
        for k in keys
        if k.retired is None or k.retired + keep_seconds > now
    ]
    fresh = _new_key(now)
    write_keys(path, [*kept, fresh])
    return fresh


class KeyRing:
    """The keys as the running provider sees them (re-read when the file changes)."""

    def __init__(self, path: Path, keep_seconds: float) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self._keys = read_or_create(path)
        self._mtime = path.stat().st_mtime_ns

    def _fresh(self) -> list[StoredKey]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return self._keys
        if mtime != self._mtime:
            self._keys = _load(self.path.read_text(encoding="utf-8"))
            self._mtime = mtime
        return self._keys

    @property
    def signing(self) -> RSAKey:
        active = [k for k in self._fresh() if k.retired is None]
        return max(active, key=lambda k: k.created).key

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        public = [
            k.key.as_dict(private=False)
            for k in self._fresh()
            if k.retired is None or k.retired + self.keep_seconds > now
        ]
        return {"keys": public}

    def key_set(self) -> KeySet:
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]
