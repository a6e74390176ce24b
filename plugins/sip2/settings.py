"""`[store] plugin = "sip2"`: how the bridge reaches the library's ILS over SIP2.

Every key an ILS's SIP2 server disagrees about (terminator, character set, error detection,
whether a login is wanted) is a setting here, because the bridge must fit the ILS, not the
other way round. Timeouts are short by default: a patron at a self-check is waiting, and the
authenticator turns a timeout into "store unavailable" rather than a wrong PIN.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bridge.settings import Port, Section

Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class Sip2StoreSettings(Section, frozen=True):
    host: str
    port: Port = 6001
    # TLS to the ILS (stunnel in front of it, or a server that speaks TLS itself)
    tls: bool = False
    ca_file: str | None = None  # None: the system's CA store
    tls_verify: bool = True
    # 93 login: CN / CO / CP; an empty login sends no 93 (some ILSes want none)
    login: str = ""
    password: str = ""  # CO; password_file / password_env keep it out of the file
    location: str = ""  # CP
    institution: str = ""  # AO in every request
    # wire dialect
    terminator: Literal["CR", "CRLF"] = "CR"
    charset: Literal["cp850", "utf-8", "ascii"] = "cp850"
    error_detection: bool = True  # AY/AZ on every request
    language: str = "000"
    # timing and pool
    connect_timeout: Seconds = 5.0
    request_timeout: Seconds = 5.0  # from asking for a connection to the reply
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    keepalive: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0  # idle seconds → 99; 0: never
    # false: connect, 93, one request, close, every time (what pooling saves; bench/upstream.py)
    persistent: bool = True
    # circuit breaker: after this many failures in a row stop asking, probe after a pause
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    breaker_reset: Seconds = 1.0  # first pause; doubles per failed probe
    breaker_reset_max: Seconds = 60.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        for name, value in (("login", self.login), ("location", self.location)):
            if "|" in value:
                raise ValueError(f"{name} must not contain '|'")
        if "|" in self.institution:
            raise ValueError("institution must not contain '|'")
        if self.login and not self.password:
            raise ValueError("a login needs a password (password, password_file or password_env)")
        if len(self.language) != 3 or not self.language.isdigit():
            raise ValueError("language must be 3 digits")
        if self.breaker_reset_max < self.breaker_reset:
            raise ValueError("breaker_reset_max must be at least breaker_reset")

    @property
    def terminator_bytes(self) -> bytes:
        return b"\r\n" if self.terminator == "CRLF" else b"\r"
