"""`sub` and the claims: pairwise per sector, never the barcode unless configured; no PIN
material; claims only by scope."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import Patron
from bridge.federation.claims import claims_for
from bridge.federation.settings import OidcClient
from bridge.federation.subjects import read_or_create_secret, subject

PATRON = Patron(
    barcode="21234000000001",
    record_id="17",
    name="Rivera, Ana",
    email="ana@example.org",
    category="ADULT",
    expires=dt.date(2030, 12, 31),
    fines=Decimal("0"),
    home_library="MAIN",
)
TODAY = dt.date(2026, 1, 1)


def client(uri: str, **kw: object) -> OidcClient:
    return OidcClient(client_id="c", redirect_uris=[uri], **kw)  # type: ignore[arg-type]


def test_pairwise_differs_by_sector_and_is_stable() -> None:
    secret = b"k" * 32
    a = subject(secret, client("https://a.example.org/cb"), PATRON)
    a2 = subject(secret, client("https://a.example.org/other"), PATRON)
    b = subject(secret, client("https://b.example.org/cb"), PATRON)
    assert a == a2 and a != b
    assert PATRON.barcode not in a and PATRON.record_id != a
    replaced = Patron(barcode="21234000009999", record_id="17")  # a new card, same record
    assert subject(secret, client("https://a.example.org/cb"), replaced) == a


def test_public_and_barcode_subjects() -> None:
    secret = b"k" * 32
    pub_a = subject(secret, client("https://a.example.org/cb", subject="public"), PATRON)
    pub_b = subject(secret, client("https://b.example.org/cb", subject="public"), PATRON)
    assert pub_a == pub_b
    assert subject(secret, client("https://a.org/cb", subject="barcode"), PATRON) == PATRON.barcode


def test_secret_is_created_once_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "pairwise.key"
    first = read_or_create_secret(path)
    assert read_or_create_secret(path) == first and len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600


def test_claims_by_scope() -> None:
    assert claims_for(PATRON, frozenset({"openid"}), TODAY) == {}
    profile = claims_for(PATRON, frozenset({"openid", "profile"}), TODAY)
    assert profile == {"name": "Rivera, Ana", "given_name": "Ana", "family_name": "Rivera"}
    email = claims_for(PATRON, frozenset({"email"}), TODAY)
    assert email["email"] == "ana@example.org"
    library = claims_for(PATRON, frozenset({"library"}), TODAY)
    assert library == {
        "library_patron": "active",
        "patron_category": "ADULT",
        "home_library": "MAIN",
    }
    expired = claims_for(PATRON, frozenset({"library"}), dt.date(2031, 1, 1))
    assert expired["library_patron"] == "expired"


@given(st.frozensets(st.sampled_from(["openid", "profile", "email", "library", "x"])))
def test_claims_never_carry_the_barcode_or_record_id(scopes: frozenset[str]) -> None:
    values = [str(v) for v in claims_for(PATRON, scopes, TODAY).values()]
    assert PATRON.barcode not in values and PATRON.record_id not in values
