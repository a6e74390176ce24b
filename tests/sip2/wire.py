"""A raw-socket SIP2 client for tests: exact bytes out, exact bytes back."""

from __future__ import annotations

import logging
import socket

from bridge.sip2.codec import checksum

DATE = "20240101    101010"


def trailer(body: bytes, sequence: int | None = None, *, az: bool = True) -> bytes:
    """Append `AY<n>AZ<checksum>` (or only what is asked) to a message body."""
    if sequence is not None:
        body += b"AY%d" % sequence
    if az:
        body += b"AZ"
        body += checksum(body).encode()
    return body


def login_msg(login: str = "selfcheck", password: str = "sc-secret-1", alg: bytes = b"00") -> bytes:
    return b"93" + alg + f"CN{login}|CO{password}|CPdesk|".encode()


def patron_msg(code: str, barcode: str, pin: str | None, institution: str = "MAIN") -> bytes:
    fixed = "001" + DATE + (" " * 10 if code == "63" else "")
    text = f"{code}{fixed}AO{institution}|AA{barcode}|AC|"
    if pin is not None:
        text += f"AD{pin}|"
    return text.encode()


class Wire:
    def __init__(self, address: tuple[str, int], timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, terminator: bytes = b"\r") -> bytes:
        """One response, terminator included; b"" when the server closed."""
        while terminator not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += chunk
        end = self.buf.index(terminator) + len(terminator)
        if terminator == b"\r" and self.buf[end : end + 1] == b"\n":
            end += 1
        frame, self.buf = self.buf[:end], self.buf[end:]
        return frame

    def ask(self, data: bytes, end: bytes = b"\r") -> bytes:
        self.send(data + end)
        return self.recv()

    def login(self, login: str = "selfcheck", password: str = "sc-secret-1") -> bytes:
        return self.ask(login_msg(login, password))

    def closed(self) -> bool:
        """True once the server has closed (reads until EOF, discarding anything else)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fields(reply: bytes, fixed: int) -> dict[str, str]:
    """Variable fields of a reply (first value of each tag), fixed part of `fixed` chars."""
    text = reply.rstrip(b"\r\n").decode("cp850")
    out: dict[str, str] = {}
    for piece in text[fixed:].split("|"):
        if len(piece) >= 2:
            out.setdefault(piece[:2], piece[2:])
    return out


def quiet_logger() -> logging.Logger:
    """A logger for the PyPI `sip2` client that writes nowhere: it logs whole requests,
    PINs included, and would otherwise reach the test run's checked log file."""
    logger = logging.getLogger("tests.sip2.pypi-client")
    logger.propagate = False
    logger.handlers[:] = [logging.NullHandler()]
    logger.setLevel(logging.CRITICAL)
    return logger
