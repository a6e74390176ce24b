"""The metadata checks on their own: truncated, oversized, malformed and hostile documents
(entity expansion, external DTDs), validity, and signatures, including a signature that covers
only part of the document (signature wrapping) and a document whose own KeyInfo carries the
forger's certificate. Fetching: a server certificate the CA file does not vouch for is refused.
Nothing but MetadataError ever comes out of `check` (a hypothesis property)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.federation.saml_metadata import MAX_BYTES, MetadataError, MetadataSource, check
from tests.federation.mellon import Sp
from tests.federation.metadata_server import MetadataServer, Signer


@pytest.fixture
def plain(tmp_path: Path) -> str:
    signer = Signer(tmp_path, "sp")
    return Sp().metadata("https://sp.example.org", signer.cert)


def refused(text: str | bytes, cert: Path | None = None) -> str:
    data = text.encode() if isinstance(text, str) else text
    with pytest.raises(MetadataError) as caught:
        check(data, cert, time.time())
    return str(caught.value)


def test_good_documents(plain: str, tmp_path: Path) -> None:
    checked = check(plain.encode(), None, time.time())
    assert checked.entities == ("https://sp.example.org/protected/mellon/metadata",)
    signer = Signer(tmp_path, "federation")
    signed = check(signer.sign(plain).encode(), signer.cert, time.time())
    assert signed.valid_until is not None and signed.valid_until > time.time()


def test_hostile_documents(plain: str) -> None:
    assert "not XML" in refused(plain[: len(plain) // 2])  # truncated
    assert "not XML" in refused(b"\xff\xfe\x00garbage")
    assert "4 MiB" in refused(b" " * (MAX_BYTES + 1))
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>'
    assert "not XML" in refused(bomb)
    assert "not XML" in refused('<!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>')
    assert "no EntityDescriptor" in refused("<html/>")
    idp_only = plain.replace("SPSSODescriptor", "IDPSSODescriptor")
    assert "SPSSODescriptor" in refused(idp_only)
    assert "not a date" in refused(
        plain.replace("<EntityDescriptor ", '<EntityDescriptor validUntil="soon" ')
    )


def test_signatures(plain: str, tmp_path: Path) -> None:
    signer, forger = Signer(tmp_path, "federation"), Signer(tmp_path, "forger")
    good = signer.sign(plain)
    assert "not signed" in refused(plain, signer.cert)
    assert "does not verify" in refused(forger.sign(plain), signer.cert)  # its own KeyInfo
    changed = good.replace("/protected/mellon/logout", "/elsewhere/logout")
    assert "does not verify" in refused(changed, signer.cert)
    assert "validUntil" in refused(signer.sign(plain, valid_seconds=-1), signer.cert)
    # Wrapping: a genuinely signed document nested inside an unsigned one that a parser
    # would take the entities from.
    inner = good.split("?>", 1)[-1]
    wrapper = (
        '<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">'
        + plain.split("?>", 1)[-1].replace("sp.example.org", "evil.example.org")
        + inner
        + "</EntitiesDescriptor>"
    )
    assert "not signed" in refused(wrapper, signer.cert)
    moved = good.replace('URI="#md1"', 'URI="#other"')
    assert "whole document" in refused(moved, signer.cert)


def test_an_untrusted_https_certificate_is_a_bad_fetch(tmp_path: Path, plain: str) -> None:
    server = MetadataServer(tmp_path)
    server.body = plain.encode()
    other = Signer(tmp_path, "not-the-ca")
    try:
        trusted = MetadataSource(0, tmp_path / "cache.xml", server.url, server.cert)
        assert trusted.refresh(time.time()) is True
        assert (tmp_path / "cache.xml").read_text() == plain
        untrusted = MetadataSource(0, tmp_path / "other.xml", server.url, other.cert)
        assert untrusted.refresh(time.time()) is False
        assert not (tmp_path / "other.xml").exists()
        assert trusted.refresh(time.time()) is False  # unchanged: nothing rewritten
    finally:
        server.close()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode)))
def test_any_bytes_give_metadata_error_or_a_document(data: bytes) -> None:
    with contextlib.suppress(MetadataError):
        check(data, None, time.time())
