"""Encrypted assertions, decrypted by a real SP: mod_auth_mellon with MellonSPPrivateKeyFile and
MellonSPCertFile. What goes over the wire (the form the browser posts to the ACS) carries an
EncryptedAssertion with the algorithm the SP asked for (its metadata's EncryptionMethod, or the
per-SP `encryption_method`), the AES key wrapped by RSA-OAEP, and no readable attribute; mellon
decrypts it and the protected page shows the attributes. An SP without an encryption key gets
a plain signed assertion unless `encrypt_assertions = true`, which then refuses to answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from bridge.federation.saml_server import read_or_create_identity
from tests.federation.mellon import (
    Sp,
    continue_to_the_page,
    federation,
    mellon,
    sign_in_to_the_form,
)
from tests.federation.support import sections
from tests.federation.test_apache_openidc import browser, shot
from tests.harness import Daemon
from tests.portal.support import free_port

__all__ = ["browser"]
pytestmark = pytest.mark.browser

GCM = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
CBC128 = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
OAEP = "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"


@pytest.mark.parametrize(
    ("sp", "algorithm"),
    [
        (Sp(encryption_methods=("urn:example:unknown", GCM, CBC128)), GCM),
        (Sp(key_use=None, config='encryption_method = "aes128-cbc"'), CBC128),
    ],
    ids=["metadata-asks-aes256-gcm", "config-aes128-cbc"],
)
def test_mellon_decrypts_the_encrypted_assertion(
    tmp_path: Path, browser: Browser, sp: Sp, algorithm: str
) -> None:
    with federation(tmp_path, [sp]) as fed, mellon(fed) as apache:
        page = browser.new_context(locale="en-US").new_page()
        wire = sign_in_to_the_form(page, f"{apache}/protected/index.html")
        assert "EncryptedAssertion" in wire and f'Algorithm="{algorithm}"' in wire
        assert f'Algorithm="{OAEP}"' in wire
        assert ":Assertion " not in wire and "<Assertion" not in wire
        assert "Rivera" not in wire and "member@" not in wire
        continue_to_the_page(page)
        expect(page).to_have_url(f"{apache}/protected/index.html")
        expect(page.locator("#name")).to_have_text("Rivera, Ana")
        shot(page, f"14-saml-encrypted-{algorithm.rsplit('#', 1)[1]}")


def test_no_encryption_key_means_a_plain_signed_assertion(tmp_path: Path, browser: Browser) -> None:
    with federation(tmp_path, [Sp(key_use="signing")]) as fed, mellon(fed) as apache:
        page = browser.new_context(locale="en-US").new_page()
        wire = sign_in_to_the_form(page, f"{apache}/protected/index.html")
        assert "EncryptedAssertion" not in wire and "member@library.example.org" in wire
        assert 'Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"' in wire
        assert 'Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"' in wire
        assert "sha1" not in wire
        continue_to_the_page(page)


def test_encryption_required_without_a_key_is_refused(tmp_path: Path) -> None:
    """`encrypt_assertions = true` for an SP whose metadata has no encryption key: the daemon
    does not start (a file), rather than sending attributes in the clear."""
    read_or_create_identity(tmp_path / "k.pem", tmp_path / "c.pem", "127.0.0.1")
    (tmp_path / "sp.xml").write_text(
        Sp(key_use="signing").metadata("http://127.0.0.1:9", tmp_path / "c.pem")
    )
    (tmp_path / "vendor-secret").write_text("unused\n")
    extra = f"""
[saml]
scope = "library.example.org"
[[saml.service_providers]]
metadata_file = "{tmp_path / "sp.xml"}"
encrypt_assertions = true
"""
    daemon = Daemon(tmp_path, sections(free_port()) + extra)
    with pytest.raises(RuntimeError, match="encrypt_assertions = true but its metadata has no key"):
        daemon.start()
    daemon.stop()
