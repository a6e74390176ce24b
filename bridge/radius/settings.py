"""`[radius]` config: listeners, reply timing and the clients (NAS) allowed to ask.

Checked while the config loads, so mistakes are config errors naming the key: networks must
parse, secrets must be non-empty, and every reply attribute must exist in the shipped dictionary
and encode as its type.

```toml
[radius]
listen = ["127.0.0.1:1812"]
reject_delay = 1.0

[[radius.clients]]
name = "wifi"
network = "10.20.0.0/16"          # most specific network wins
secret_file = "/etc/patron-bridge/wifi.secret"
reply = { Session-Timeout = 14400, Class = "library-wifi" }
[radius.clients.categories.JUVENILE]
Session-Timeout = 3600
Filter-Id = "juvenile"
```
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from bridge.radius.attributes import ConfigValue, encode_table, merge
from bridge.radius.eap.settings import EapSettings
from bridge.settings import PolicySettings, Section


class RadiusClient(Section, frozen=True):
    name: str
    network: str  # an address or a CIDR network, IPv4 or IPv6
    secret: str
    # BlastRADIUS (CVE-2024-3596): drop Access-Requests without a valid Message-Authenticator.
    # true (default): always required; "auto": required from a NAS address once it has sent
    # one (FreeRADIUS's auto); false: never (pam_radius_auth < 3.0, which never sends one).
    require_message_authenticator: bool | Literal["auto"] = True
    # When the above is off: still drop requests that carry Proxy-State but no authenticator.
    limit_proxy_state: bool = True
    policy: PolicySettings | None = None  # None: the global [policy]
    reply: dict[str, ConfigValue] = msgspec.field(default_factory=dict)  # on every Access-Accept
    categories: dict[str, dict[str, ConfigValue]] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must not be empty")
        if not self.secret:
            raise ValueError("secret: must not be empty")
        try:
            ipaddress.ip_network(self.network, strict=False)
        except ValueError:
            raise ValueError(f"network: {self.network!r} is not an address or network") from None
        encode_table(self.reply)
        for category, table in self.categories.items():
            try:
                merge(self.reply, table)
            except ValueError as exc:
                raise ValueError(f"categories.{category}: {exc}") from None


class RadiusSettings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:1812"])
    clients: list[RadiusClient] = msgspec.field(default_factory=list)
    # Seconds before an Access-Reject is sent (FreeRADIUS: 1; 3.2.8 allows down to 0.5).
    reject_delay: Annotated[float, msgspec.Meta(ge=0, le=10)] = 1.0
    # RFC 5080 duplicate cache: seconds a reply is kept for retransmissions (RFC: 5 to 30).
    duplicate_window: Annotated[float, msgspec.Meta(ge=1, le=60)] = 10.0
    duplicate_max_entries: Annotated[int, msgspec.Meta(ge=16)] = 65536
    # RFC 5997: answer Status-Server while the store is healthy (silence while it is not).
    status_server: bool = True
    health_ttl: Annotated[float, msgspec.Meta(ge=0, le=300)] = 2.0
    health_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    # When the store cannot answer an Access-Request: stay silent (the NAS fails over to its
    # next server) or send Access-Reject. Never Accept.
    store_unavailable: Literal["silent", "reject"] = "silent"
    # 802.1X: terminate EAP-TTLS with inner PAP here (bridge/radius/eap/). None: EAP refused.
    eap: EapSettings | None = None
