"""TLS-method fragmentation (RFC 5216 2.1.5, used as is by TTLS and PEAP).

`Reassembler` joins the peer's fragments under a hard size bound; `Fragmenter` cuts the server's
TLS flight so that every EAP packet fits the link (`Framed-MTU`). Pure and bounded: neither holds
more than `limit` octets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from bridge.radius.eap.codec import FLAG_MORE, TlsPayload, encode_tls
from bridge.radius.packet import ProtocolError

# Octets of an EAP packet that are not TLS data: code, id, length, type, flags, TLS length.
OVERHEAD: Final = 10
EAPOL_HEADER: Final = 4  # Framed-MTU is the link MTU; EAPOL adds 4 octets around the EAP packet
MIN_MTU: Final = 64  # RFC 2865 5.12


def fragment_size(configured: int, framed_mtu: int | None) -> int:
    """TLS data octets per EAP packet: the configured EAP packet size, lowered to fit the
    Framed-MTU the NAS announced."""
    size = configured
    if framed_mtu is not None:
        size = min(size, max(framed_mtu, MIN_MTU) - EAPOL_HEADER)
    return max(size - OVERHEAD, 16)


@dataclass(slots=True)
class Reassembler:
    limit: int
    _parts: list[bytes] = field(default_factory=list)
    _size: int = 0
    _total: int | None = None

    @property
    def busy(self) -> bool:
        return bool(self._parts) or self._total is not None

    def feed(self, payload: TlsPayload) -> bytes | None:
        """The whole TLS message once the last fragment arrived, else None (send an ACK)."""
        if not payload.flags & FLAG_MORE and not self._parts and self._total is None:
            return self._whole(payload)
        if payload.total is not None:
            if payload.total > self.limit:
                raise ProtocolError(
                    f"TLS message of {payload.total} octets announced", "TLS message too long"
                )
            if self._total is not None and payload.total != self._total:
                raise ProtocolError("TLS message length changed between fragments")
            self._total = payload.total
        data = payload.data
        self._size += len(data)
        if self._size > self.limit or (self._total is not None and self._size > self._total):
            raise ProtocolError("TLS fragments overrun the message length", "TLS fragments overrun")
        if payload.more:
            if not data:
                raise ProtocolError("empty TLS fragment with the more flag", "empty TLS fragment")
            self._parts.append(data)
            return None
        if self._total is not None and self._size != self._total:
            raise ProtocolError("TLS fragments shorter than the message length", "TLS short")
        if self._parts:  # the last of several fragments: joined once
            self._parts.append(data)
            data = b"".join(self._parts)
        message = data
        self._parts.clear()
        self._size = 0
        self._total = None
        return message

    def _whole(self, payload: TlsPayload) -> bytes:
        """An unfragmented message (most rounds): `feed`'s checks in the same order, with
        nothing to keep between rounds."""
        data, total = payload.data, payload.total
        if total is not None and total > self.limit:
            raise ProtocolError(f"TLS message of {total} octets announced", "TLS message too long")
        if len(data) > self.limit or (total is not None and len(data) > total):
            raise ProtocolError("TLS fragments overrun the message length", "TLS fragments overrun")
        if total is not None and len(data) != total:
            raise ProtocolError("TLS fragments shorter than the message length", "TLS short")
        return data


@dataclass(slots=True)
class Fragmenter:
    """The server's pending TLS octets, handed out one EAP packet's worth at a time."""

    pending: bytes = b""
    offset: int = 0

    def load(self, data: bytes) -> None:
        self.pending = data
        self.offset = 0

    @property
    def busy(self) -> bool:
        return self.offset < len(self.pending)

    def next(self, version: int, size: int) -> bytes:
        """The next TTLS payload (flags, length on the first fragment, data)."""
        start, pending = self.offset, self.pending
        chunk = pending[start : start + size]
        self.offset = end = start + len(chunk)
        flags = version | (FLAG_MORE if end < len(pending) else 0)
        if start == 0:
            return encode_tls(flags, chunk, len(pending))
        return encode_tls(flags, chunk)
