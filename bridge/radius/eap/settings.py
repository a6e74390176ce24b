"""`[radius.eap]`: the tunnel's certificate and the bounds on conversations.

```toml
[radius.eap]
certificate = "tls/radius.pem"   # server certificate (chain) the supplicants must trust
key = "tls/radius-key.pem"
ca = "tls/ca.pem"                # optional: appended to the chain sent to supplicants
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
    # PEAP only: seconds a TLS session stays resumable after an Access-Accept (OpenSSL's bounded
    # in-memory session cache); a resumed PEAP tunnel still runs EAP-GTC. TTLS never resumes:
    # supplicants skip the inner PAP on a resumed TTLS tunnel. 0: off.
    resumption_lifetime: Annotated[int, msgspec.Meta(ge=0, le=86400)] = 3600
    # Put the inner User-Name (the barcode) in the Access-Accept, for accounting.
    accept_user_name: bool = False
