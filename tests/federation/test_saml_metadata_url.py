"""SP metadata from an HTTPS URL, with a real SP: mod_auth_mellon's metadata is served, signed
by a federation key, by a local HTTPS server whose certificate the bridge trusts through
`metadata_ca_file`. The bridge fetches it, checks the signature against
`metadata_signing_cert`, caches it, and mellon signs a patron in. A reload refetches: a
tampered copy, one signed by another key, an unsigned one and one past its validUntil are each
refused with one log line while the last good copy keeps serving; a new good copy replaces it.
With the URL down, a restart starts from the cached copy and mellon still signs in."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser

from tests.federation.mellon import (
    Federation,
    Sp,
    continue_to_the_page,
    federation,
    mellon,
    sign_in_to_the_form,
)
from tests.federation.metadata_server import MetadataServer, Signer
from tests.federation.test_apache_openidc import browser, shot

__all__ = ["browser"]
pytestmark = pytest.mark.browser


def lines(fed: Federation, event: str) -> list[dict[str, object]]:
    out = []
    for line in fed.daemon.stderr_path.read_text().splitlines():
        if f'"{event}"' in line:
            out.append(json.loads(line))
    return out


def after_reload(fed: Federation, event: str) -> dict[str, object]:
    """Reload, and the log line the refetch then writes (waited for: it runs in the
    background)."""
    before = len(lines(fed, event))
    answer = fed.daemon.cli("reload")
    assert answer.returncode == 0 and answer.stdout.startswith("reloaded"), answer.stderr
    deadline = time.monotonic() + 60
    while len(lines(fed, event)) == before:
        assert time.monotonic() < deadline, f"no {event} after reload"
        time.sleep(0.1)
    return lines(fed, event)[-1]


def request_accepted(apache: str, issuer: str) -> bool:
    """mellon's AuthnRequest reaches the bridge's sign-in form (its SP is known and trusted)."""
    with httpx.Client(timeout=30, follow_redirects=False) as http:
        login = http.get(f"{apache}/protected/index.html").headers["location"]
        to_idp = http.get(login).headers["location"]
        assert to_idp.startswith(f"{issuer}/saml/sso/redirect?")
        answer = http.get(to_idp)
        return answer.status_code == 200 and "/saml/login?request=" in answer.text


def test_metadata_from_a_url(tmp_path: Path, browser: Browser) -> None:
    server = MetadataServer(tmp_path)
    signer, stranger = Signer(tmp_path, "federation"), Signer(tmp_path, "stranger")
    plain: list[str] = []

    def entries(sp_dir: Path) -> str:
        plain.append((sp_dir / "sp0.xml").read_text())
        server.body = signer.sign(plain[0]).encode()
        return f"""
[[saml.service_providers]]
metadata_url = "{server.url}"
metadata_ca_file = "{server.cert}"
metadata_signing_cert = "{signer.cert}"
attributes = ["eduPersonScopedAffiliation", "displayName"]
"""

    try:
        with federation(tmp_path, [Sp()], entries=entries) as fed:
            cached = list((tmp_path / "var" / "saml-metadata").glob("*.xml"))
            assert len(cached) == 1 and cached[0].read_bytes() == server.body
            with mellon(fed) as apache:
                page = browser.new_context(locale="en-US").new_page()
                sign_in_to_the_form(page, f"{apache}/protected/index.html")
                continue_to_the_page(page)
                shot(page, "18-saml-metadata-url")

                good = signer.sign(plain[0])
                tampered = good.replace("/protected/mellon/postResponse", "/evil/postResponse")
                bad = {
                    "tampered": (tampered, "does not verify"),
                    "other signer": (stranger.sign(plain[0]), "does not verify"),
                    "unsigned": (plain[0], "not signed"),
                    "expired": (signer.sign(plain[0], valid_seconds=-60), "validUntil"),
                }
                for name, (text, reason) in bad.items():
                    server.body = text.encode()
                    kept = after_reload(fed, "saml_metadata_kept_last_good")
                    assert reason in str(kept["reason"]), name
                    assert kept["url"] == server.url
                    assert request_accepted(apache, fed.issuer), name
                    assert cached[0].read_bytes() != server.body
                server.body = signer.sign(plain[0], valid_seconds=7200).encode()
                fresh = after_reload(fed, "saml_metadata_refreshed")
                assert fresh["entities"] == [fed.entity()]
                assert cached[0].read_bytes() == server.body

                server.close()  # the URL is down from here on
                down = after_reload(fed, "saml_metadata_kept_last_good")
                assert "onnect" in str(down["reason"]) or "refused" in str(down["reason"])
                assert request_accepted(apache, fed.issuer)
                fed.daemon.stop()
                fed.daemon.start()  # a restart with the URL down starts from the cache
                assert request_accepted(apache, fed.issuer)
    finally:
        if server.thread.is_alive():
            server.close()
