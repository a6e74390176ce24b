"""`[radius.eap]`: the tunnel's certificate and the bounds on conversations.

```toml
[radius.eap]
certificate = "tls/radius.pem"   # server certificate (chain) the supplicants must trust
key = "tls/radius-key.pem"
ca = "tls/ca.pem"                # optional: appended to the chain sent to supplicants
dh = "tls/dhparams.pem"          # optional: TLS 1.2 DHE parameters
groups = ["X25519", "P-256"]     # optional: ECDHE / TLS 1.3 groups
```
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bridge.settings import Section


class EapSettings(Section, frozen=True):
    certificate: str
    key: str
    ca: str | None = None
    # EAP packet size before Framed-MTU lowers it (FreeRADIUS's fragment_size is 1024).
    fragment_size: Annotated[int, msgspec.Meta(ge=100, le=4000)] = 1024
    # Conversations in flight: per client (NAS) and in total. A new one over a limit is rejected.
    max_conversations: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 4096
    max_per_client: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1024
    # Seconds a conversation may wait for the next round before it is forgotten.
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 30.0
    # Access-Challenge rounds per conversation (a TLS 1.2 handshake with 1 KiB fragments: ~8).
    max_rounds: Annotated[int, msgspec.Meta(ge=4, le=1000)] = 50
    # Largest TLS message accepted from a peer (its fragments joined).
    max_message: Annotated[int, msgspec.Meta(ge=4096, le=1 << 20)] = 65536
    # Highest TLS version offered. "1.3" follows RFC 9427; "1.2" is FreeRADIUS 3.2's default for
    # TTLS and what supplicants (wpa_supplicant 2.10) use unless told otherwise.
    tls_max_version: Literal["1.2", "1.3"] = "1.2"
    # Offer PEAPv0 with inner EAP-GTC to peers that refuse TTLS asking for PEAP (Android, Linux;
    # Windows' built-in supplicant has no GTC). TTLS/PAP is always offered first.
    peap: bool = True
    # Seconds a TLS session stays resumable after an Access-Accept (OpenSSL's bounded in-memory
    # session cache). A resumed PEAP tunnel still runs EAP-GTC. A resumed TTLS tunnel has no
    # inner PAP: it is accepted only for the card its full authentication accepted, if that
    # card is in good standing now (audited with reason "resumed"); TLS 1.2 only, so TTLS does
    # not resume when tls_max_version = "1.3". 0: off.
    resumption_lifetime: Annotated[int, msgspec.Meta(ge=0, le=86400)] = 3600
    # TLS 1.2 DHE: a PEM file of Diffie-Hellman parameters (`openssl dhparam 2048`); without it
    # OpenSSL offers ECDHE suites only. Path relative to the config file.
    dh: str | None = None
    # Key-exchange groups, most preferred first, for TLS 1.2 ECDHE and TLS 1.3, as OpenSSL
    # names them ("X25519", "P-256", "P-384", "ffdhe2048"); empty: OpenSSL's defaults.
    groups: tuple[str, ...] = ()
    # Put the inner User-Name (the barcode) in the Access-Accept, for accounting.
    accept_user_name: bool = False
