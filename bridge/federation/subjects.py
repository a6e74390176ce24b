"""`sub`: a stable identifier from the patron's record id that reveals neither it nor the card.

Pairwise (OpenID Connect Core 8.1): HMAC-SHA256 of sector and record id under a per-install
secret, so two vendors cannot join their users by `sub`, and a card replaced after a loss keeps
the same `sub` (the record id stays). The barcode is released only to a client configured for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from bridge.core.patron import Patron
from bridge.federation.settings import OidcClient


def read_or_create_secret(path: Path) -> bytes:
    if path.exists():
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value.hex() + "\n")
    return value


def subject(secret: bytes, client: OidcClient, patron: Patron) -> str:
    if client.subject == "barcode":
        return patron.barcode
    sector = client.sector_id if client.subject == "pairwise" else ""
    mac = hmac.new(secret, f"{sector}|{patron.record_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
