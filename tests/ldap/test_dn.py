"""DN parsing and normalisation: every spelling of a DN a search returned names the same entry."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ldap import dn


def test_spellings_of_one_dn_normalise_alike() -> None:
    canonical = dn.normalise("uid=21234000000001,ou=patrons,dc=library,dc=example")
    for spelling in (
        "UID=21234000000001,OU=Patrons,DC=Library,DC=Example",
        "uid=21234000000001, ou=patrons , dc=library,dc=example",
        "uid=\\32\\31234000000001,ou=patrons,dc=library,dc=example",
        "0.9.2342.19200300.100.1.1=21234000000001,ou=patrons;dc=library,dc=example",
        "  uid = 21234000000001 ,ou=patrons,dc=library,dc=example",
    ):
        assert dn.normalise(spelling) == canonical, spelling


def test_multi_valued_rdns_sort_and_escapes_survive() -> None:
    assert dn.parse("cn=b+sn=a,dc=x") == dn.parse("sn=a+cn=b,dc=x")
    assert dn.parse("cn=a\\,b,dc=x")[0] == (("cn", "a,b"),)
    assert dn.parse("cn=\\ padded\\ ,dc=x")[0] == (("cn", " padded "),)
    assert dn.parse("cn=Mixed,dc=x", fold=False)[0] == (("cn", "Mixed"),)
    assert dn.parse("") == ()


@pytest.mark.parametrize(
    "bad", ["uid", "uid=a\\", "=x", "uid=a,", "uid=a\\zz,dc=x", "ui d=a", "uid=a=b", "cn=\\ff"]
)
def test_invalid_dns_raise(bad: str) -> None:
    with pytest.raises(dn.DNError):
        dn.parse(bad)


def test_within() -> None:
    base = dn.parse("dc=library,dc=example")
    assert dn.is_within(dn.parse("uid=1,ou=patrons,dc=library,dc=example"), base)
    assert dn.is_within(base, base)
    assert not dn.is_within(dn.parse("dc=example"), base)
    assert not dn.is_within(dn.parse("uid=1,dc=other,dc=example"), base)


@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s), min_size=1))
def test_property_escape_then_parse_round_trips(values: list[str]) -> None:
    text = ",".join(f"cn={dn.escape(v)}" for v in values)
    assert [rdn[0][1] for rdn in dn.parse(text, fold=False)] == values


@given(st.text(max_size=40))
def test_property_anything_parses_or_raises(text: str) -> None:
    with contextlib.suppress(dn.DNError):
        dn.parse(text)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["uid", "OU", " dc ", "cn", "o-x"]),
            st.text(alphabet=st.characters(blacklist_characters=',+"\\<>;=#\x00'), max_size=8),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_property_fast_path_agrees_with_full_parser(parts: list[tuple[str, str]]) -> None:
    text = ",".join(f"{a}={v}" for a, v in parts)
    for fold in (True, False):
        try:
            expected = dn.parse_general(text, fold=fold)
        except dn.DNError:
            assert not dn._PLAIN.fullmatch(text)  # the fast path never accepts a bad DN
            continue
        assert dn.parse(text, fold=fold) == expected
