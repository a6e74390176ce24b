"""Shared pieces of the federation tests: the daemon's `[oidc]` config and a tiny client that
walks the authorization code flow over real HTTP (httpx), reading the sign-in form like a
browser would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.harness import Daemon
from tests.portal.support import free_port

SECRET = "rp-secret-8f2d41"
RP = "https://rp.example.org/callback"
PUBLIC_RP = "https://app.example.org/cb"
STRICT_RP = "https://strict.example.org/cb"
CONSENT_RP = "https://booking.example.org/cb"


def sections(port: int, *, extra_clients: str = "", issuer_port: int | None = None) -> str:
    """`issuer_port`: another host's port, for hosts serving one issuer behind a balancer."""
    pages = free_port()
    return f"""
[portal]
listen = "127.0.0.1:{pages}"
base_url = "http://127.0.0.1:{pages}"
library_name = "Riverside Public Library"

[oidc]
listen = "127.0.0.1:{port}"
issuer = "http://127.0.0.1:{issuer_port or port}"
keys_file = "oidc-keys.json"
pairwise_key_file = "oidc-pairwise.key"
id_token_minutes = 5

[[oidc.clients]]
client_id = "vendor"
secret_file = "vendor-secret"
redirect_uris = ["{RP}"]
scopes = ["openid", "profile", "email", "library"]
post_logout_redirect_uris = ["https://rp.example.org/bye"]
[oidc.clients.policy]
allow_expired = true
fines_limit = 100.0

[[oidc.clients]]
client_id = "app"
redirect_uris = ["{PUBLIC_RP}"]
scopes = ["openid", "profile"]

[[oidc.clients]]
client_id = "strict"
secret = "{SECRET}"
redirect_uris = ["{STRICT_RP}"]
scopes = ["openid", "library"]
[oidc.clients.policy]
allow_expired = false

[[oidc.clients]]
client_id = "booking"
secret = "{SECRET}"
name = "Room Booking"
redirect_uris = ["{CONSENT_RP}"]
scopes = ["openid", "profile", "email", "library"]
consent = true
{extra_clients}
"""


def start_daemon(tmp: Path, throttle: str = "", extra_clients: str = "") -> tuple[Daemon, str]:
    port = free_port()
    (tmp / "vendor-secret").write_text(SECRET + "\n")
    daemon = Daemon(tmp, sections(port, extra_clients=extra_clients), throttle=throttle).start()
    return daemon, f"http://127.0.0.1:{port}"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Flow:
    client_id: str
    redirect_uri: str
    scope: str = "openid profile"
    state: str = "st-1"
    nonce: str = "n-1"
    challenge: str | None = None

    def query(self, **over: str | None) -> str:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
        }
        if self.challenge is not None:
            params.update(code_challenge=self.challenge, code_challenge_method="S256")
        params.update(over)
        return urlencode({k: v for k, v in params.items() if v is not None})


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def sign_in(http: httpx.Client, issuer: str, flow: Flow, barcode: str, pin: str) -> httpx.Response:
    """GET authorize, then POST the sign-in form it shows; the answer is returned unfollowed."""
    page = http.get(f"{issuer}/oidc/authorize?{flow.query()}")
    assert page.status_code == 200, page.text
    fields = form_fields(page.text)
    return http.post(f"{issuer}/oidc/login", data={**fields, "barcode": barcode, "pin": pin})


def code_of(response: httpx.Response, redirect_uri: str) -> str:
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?")
    query = parse_qs(urlsplit(location).query)
    return query["code"][0]


def error_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["error"][0]


def redeem(
    issuer: str, code: str, redirect_uri: str, auth: tuple[str, str] | None, **form: str
) -> httpx.Response:
    """POST the code to `issuer`'s token endpoint (any host's URL)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **form}
    return httpx.post(f"{issuer}/oidc/token", data=data, auth=auth, timeout=30)


def userinfo(base: str, token: str) -> httpx.Response:
    return httpx.get(f"{base}/oidc/userinfo", headers={"authorization": f"Bearer {token}"})
