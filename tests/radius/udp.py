"""A tiny raw RADIUS client over a UDP socket, for packets real clients refuse to build
(wrong or missing Message-Authenticator, Proxy-State, odd password bytes, garbage)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from bridge.radius import packet as rp

TIMEOUT = 10.0  # a deadline for an expected reply, never an assertion on time


class Nas:
    def __init__(self, server: tuple[str, int], secret: bytes, source: str = "127.0.0.1") -> None:
        self.server = server
        self.secret = secret
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(TIMEOUT)
        self._next = 0

    def close(self) -> None:
        self.sock.close()

    def ident(self) -> int:
        self._next = (self._next + 1) % 256
        return self._next

    def access(
        self,
        user: bytes,
        password: bytes | None,
        *,
        extra: Sequence[tuple[int, bytes]] = (),
        ma: bool = True,
        secret: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """(request bytes, request authenticator) for an Access-Request."""
        auth = os.urandom(16)
        attrs: list[tuple[int, bytes]] = [(rp.USER_NAME, user)]
        if password is not None:
            hidden = rp.encrypt_password(password, secret or self.secret, auth)
            attrs.append((rp.USER_PASSWORD, hidden))
        attrs.extend(extra)
        raw = rp.encode_request(
            rp.ACCESS_REQUEST,
            self.ident(),
            auth,
            attrs,
            secret or self.secret,
            message_authenticator=ma,
        )
        return raw, auth

    def status(self) -> tuple[bytes, bytes]:
        auth = os.urandom(16)
        return rp.encode_request(rp.STATUS_SERVER, self.ident(), auth, [], self.secret), auth

    def send(self, raw: bytes) -> None:
        self.sock.sendto(raw, self.server)

    def receive(self) -> rp.Packet:
        data, _ = self.sock.recvfrom(4096)
        return rp.decode(data)

    def receive_raw(self) -> bytes:
        data, _ = self.sock.recvfrom(4096)
        return data

    def ask(self, raw_and_auth: tuple[bytes, bytes]) -> rp.Packet:
        raw, auth = raw_and_auth
        self.send(raw)
        data = self.receive_raw()
        assert rp.reply_ok(data, auth, self.secret), "reply authenticator does not verify"
        reply = rp.decode(data)
        assert reply.identifier == raw[1]
        return reply

    def nothing_but_probe(self) -> None:
        """Assert no reply is pending: a Status-Server probe's answer must come back first.
        Drops happen synchronously on receipt, so an answer to a dropped packet would precede."""
        raw, auth = self.status()
        reply = self.ask((raw, auth))
        assert reply.code == rp.ACCESS_ACCEPT
