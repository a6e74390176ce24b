"""The outer identity's realm for the audit: a domain name or nothing of it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.radius.eap.realm import NOT_A_DOMAIN, realm_of


def test_realms() -> None:
    assert realm_of(b"anonymous@Library.Example") == "library.example"
    assert realm_of(b"a@b@branch.library.example") == "branch.library.example"
    assert realm_of(b"anonymous") == ""
    assert realm_of(b"21234000000001") == ""


def test_what_is_not_a_domain_name_shows_nothing() -> None:
    for identity in (
        b"21234000000001@5961",  # a PIN typed as the realm
        b"anonymous@1234.5678",  # digits only
        b"anonymous@",
        b"anonymous@library",  # no dot
        b"anonymous@lib rary.example",
        b"anonymous@library.example\x00",
        b"anonymous@" + b"a" * 60 + b".example",
        "anonymous@bibliothèque.example".encode(),
    ):
        assert realm_of(identity) == NOT_A_DOMAIN, identity


@given(st.binary(max_size=300))
def test_any_identity_gives_a_bounded_domain_or_a_fixed_text(identity: bytes) -> None:
    realm = realm_of(identity)
    assert realm in ("", NOT_A_DOMAIN) or (
        len(realm) <= 64 and "@" not in realm and realm == realm.lower() and "." in realm
    )
    if realm not in ("", NOT_A_DOMAIN):
        assert identity.lower().endswith(b"@" + realm.encode())
