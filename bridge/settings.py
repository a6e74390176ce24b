"""Building blocks every config section shares: the strict base struct, secrets given inline or
as `*_file`/`*_env`, listen addresses, and per-client policy.

Front ends keep their own section structs next to their code (`bridge/sip2/settings.py`, ...);
`bridge.config` composes them. Only `bridge.config` reads TOML or the environment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import msgspec

from bridge.core.patron import ClientPolicy


class Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every config table: unknown keys are errors, values are immutable."""


# Field names whose values are secrets: masked by check-config, resolvable as NAME_file/NAME_env.
SECRET_KEYS = frozenset({"password", "secret", "api_key", "token_key", "sentinel_password"})

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class PolicySettings(Section, frozen=True):
    """Which patron states still authenticate for a client."""

    allow_expired: bool = False
    allow_blocked: bool = False
    fines_limit: Annotated[float, msgspec.Meta(ge=0)] | None = 10.0

    def client_policy(self) -> ClientPolicy:
        limit = None if self.fines_limit is None else Decimal(str(self.fines_limit))
        return ClientPolicy(self.allow_expired, self.allow_blocked, limit)


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:6001`, `[::1]:389`, `:1812` (all addresses) → (host, port)."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad listen address {value!r}")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"bad listen address {value!r} (want HOST:PORT)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in listen address {value!r}")
    return host or "0.0.0.0", int(port)  # noqa: S104 - an empty host means all, by intent


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
