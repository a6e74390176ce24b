"""Encoded search answers kept on an entry: the same bytes as encoding afresh, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.ldap import directory as d
from bridge.ldap import messages as m

ENTRY_ATTRS = [
    ("objectClass", [b"top", b"inetOrgPerson"]),
    ("uid", [b"21234000000001"]),
    ("cn", [b"Rivera, Ana"]),
    ("mail", [b"ana@example.org"]),
    ("entryUUID", [b"6f1d2c1e-3b7a-5c55-9a43-0c6a3a9b2e11"]),
]
NAMES = ["cn", "mail", "uid", "*", "+", "1.1", "entryUUID", "objectClass", "sn"]


def fresh() -> d.Entry:
    return d.Entry("uid=21234000000001,ou=patrons,dc=x", ENTRY_ATTRS, patron=True)


@given(
    st.lists(st.sampled_from(NAMES), max_size=4).map(tuple),
    st.one_of(st.none(), st.just(frozenset({"cn"}))),
    st.booleans(),
)
def test_kept_answers_are_the_fresh_encoding(
    requested: tuple[str, ...], allowed: frozenset[str] | None, types_only: bool
) -> None:
    entry = fresh()
    expected = m.entry_op(entry.dn, entry.select(requested, allowed, types_only))
    assert entry.answer(requested, allowed, types_only) == expected
    assert entry.answer(requested, allowed, types_only) == expected  # kept, same bytes
    assert m.envelope(7, expected) == m.entry(
        7, entry.dn, entry.select(requested, allowed, types_only)
    )


def test_answers_kept_per_entry_are_bounded() -> None:
    entry = fresh()
    for i in range(3 * d.ENCODED_PER_ENTRY):
        entry.answer((f"attr{i}",), None, False)
        assert len(entry.encoded) <= d.ENCODED_PER_ENTRY


def test_a_long_attribute_list_is_answered_but_not_kept() -> None:
    entry = fresh()
    requested = (*(f"a{i}" for i in range(d.ENCODED_MAX_REQUESTED + 1)), "cn")
    assert entry.answer(requested, None, False) == m.entry_op(
        entry.dn, entry.select(requested, None, False)
    )
    assert entry.encoded == {}


def test_a_long_attribute_name_is_answered_but_not_kept() -> None:
    entry = fresh()
    requested = ("cn", "x" * (d.ENCODED_MAX_CHARS + 1))
    assert entry.answer(requested, None, False) == m.entry_op(
        entry.dn, entry.select(requested, None, False)
    )
    assert entry.encoded == {}
