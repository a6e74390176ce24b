"""Filter evaluation (three-valued) and push-down: what lookups a filter implies, or None."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.ldap import messages as m
from bridge.ldap.filters import Lookup, evaluate, excludes, lookups, required, text

KEYS = {"uid": "barcode", "mail": "email", "uniqueidentifier": "record"}
ENTRY = {
    "objectclass": [b"top", b"person", b"inetOrgPerson"],
    "uid": [b"21234000000001"],
    "mail": [b"Ana.Rivera@example.org"],
    "cn": [b"Rivera, Ana"],
    "employeetype": [b"ADULT"],
}


def eq(attr: str, value: str) -> m.Equality:
    return m.Equality(attr, value.encode())


def test_evaluate_basics() -> None:
    assert evaluate(eq("UID", "21234000000001"), ENTRY) is True
    assert evaluate(eq("mail", "ana.rivera@EXAMPLE.org"), ENTRY) is True  # case-insensitive
    assert evaluate(eq("objectClass", "inetorgperson"), ENTRY) is True
    assert evaluate(m.Present("objectclass"), ENTRY) is True
    assert evaluate(m.Not(eq("employeeType", "JUVENILE")), ENTRY) is True
    assert evaluate(m.Substrings("cn", b"riv", (b"a",), b"ana"), ENTRY) is True
    assert evaluate(m.Substrings("cn", b"ana", (), None), ENTRY) is False
    assert evaluate(m.GreaterOrEqual("uid", b"2"), ENTRY) is True
    assert evaluate(m.And((eq("uid", "21234000000001"), eq("cn", "nobody"))), ENTRY) is False


def test_unknown_matching_rules_are_undefined() -> None:
    undefined = m.Extensible("1.2.3.4", "cn", b"x", False)
    assert evaluate(undefined, ENTRY) is None
    assert evaluate(m.Not(undefined), ENTRY) is None
    assert evaluate(m.Or((undefined, eq("uid", "21234000000001"))), ENTRY) is True
    assert evaluate(m.Extensible("caseIgnoreMatch", "uid", b"21234000000001", False), ENTRY)


def test_equality_on_login_attributes_pushes_down() -> None:
    assert lookups(eq("uid", "21234000000001"), KEYS) == {Lookup("barcode", "21234000000001")}
    ezproxy = m.And((eq("objectClass", "person"), eq("mail", "a@b")))
    assert lookups(ezproxy, KEYS) == {Lookup("email", "a@b")}
    either = m.Or((eq("uid", "1"), eq("uniqueIdentifier", "r1")))
    assert lookups(either, KEYS) == {Lookup("barcode", "1"), Lookup("record", "r1")}


def test_enumerating_filters_have_no_plan() -> None:
    for f in (
        m.Present("uid"),  # Libki with a typed `*`
        m.Substrings("uid", b"2123", (), None),
        eq("objectClass", "person"),
        m.Not(eq("uid", "1")),
        m.Or((eq("uid", "1"), m.Present("uid"))),  # `)(` injection into an OR
        m.Or(tuple(eq("uid", str(i)) for i in range(40))),  # too many lookups
    ):
        assert lookups(f, KEYS) is None, text(f)


def test_injected_star_as_escaped_value_is_a_literal() -> None:
    # `(uid=\2a)` is equality with the value "*", not presence.
    assert lookups(eq("uid", "*"), KEYS) == {Lookup("barcode", "*")}


def test_text_escapes() -> None:
    f = m.And((m.Equality("cn", b"a*b(c)\\\x00"), m.Present("uid")))
    assert text(f) == "(&(cn=a\\2ab\\28c\\29\\5c\\00)(uid=*))"


# --- objectClass decides statically that no patron can match (SSSD's group and sudo searches) --

PATRON_CLASSES = frozenset({"top", "person", "organizationalperson", "inetorgperson"})


def test_excludes_searches_for_other_classes() -> None:
    assert excludes(eq("objectClass", "sudoRole"), PATRON_CLASSES)
    assert excludes(m.And((eq("cn", "ADULT"), eq("objectclass", "posixGroup"))), PATRON_CLASSES)
    assert excludes(m.Or((eq("objectClass", "a"), eq("objectClass", "b"))), PATRON_CLASSES)
    assert not excludes(m.Or((eq("objectClass", "a"), eq("uid", "1"))), PATRON_CLASSES)
    assert not excludes(eq("objectClass", "InetOrgPerson"), PATRON_CLASSES)
    assert not excludes(m.Not(eq("objectClass", "inetOrgPerson")), PATRON_CLASSES)
    assert not excludes(m.Present("objectClass"), PATRON_CLASSES)


_leaf = st.sampled_from(
    [
        eq("objectClass", "sudoRole"),
        eq("objectClass", "inetOrgPerson"),
        eq("objectClass", "posixGroup"),
        eq("uid", "21234000000001"),
        eq("cn", "x"),
        m.Present("objectClass"),
        m.Present("sudoHost"),
    ]
)
_filters = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: m.And(tuple(xs))),
        st.lists(inner, min_size=1, max_size=3).map(lambda xs: m.Or(tuple(xs))),
        inner.map(m.Not),
    ),
    max_leaves=8,
)


@given(_filters)
def test_property_an_excluding_filter_never_matches_a_patron(f: m.Filter) -> None:
    if excludes(f, PATRON_CLASSES):
        assert evaluate(f, ENTRY) is not True


def test_required_attributes_of_the_search_shapes_vendors_send() -> None:
    ezproxy = m.And((eq("objectClass", "inetOrgPerson"), eq("uid", "1")))
    assert required(ezproxy) == {"objectclass", "uid"}
    assert required(m.Or((eq("uid", "1"), eq("mail", "a@b")))) == set()
    assert required(m.Or((eq("uid", "1"), m.And((eq("uid", "2"), eq("cn", "x")))))) == {"uid"}
    assert required(m.Not(eq("uid", "1"))) == set()
    assert required(m.Extensible("1.2.3.4", "uid", b"1", False)) == set()  # unknown rule
    assert required(m.Extensible(None, "UID", b"1", False)) == {"uid"}
    assert required(m.Substrings("CN", b"a", (), None)) == {"cn"}


_entries = st.fixed_dictionaries(
    {},
    optional={
        "objectclass": st.just([b"top", b"organizationalUnit"]),
        "uid": st.just([b"21234000000001"]),
        "cn": st.just([b"x"]),
        "sudohost": st.just([b"ALL"]),
    },
)


@given(_filters, _entries)
def test_property_an_entry_without_a_required_attribute_never_matches(
    f: m.Filter, entry: dict[str, list[bytes]]
) -> None:
    """The search skips an entry missing a required attribute: that must never hide a match."""
    if not required(f) <= entry.keys():
        assert evaluate(f, entry) is not True


def test_long_filter_values_are_not_remembered() -> None:
    from bridge.ldap import filters

    before = filters._fold_memo.cache_info().currsize
    for i in range(50):
        value = f"{i:04d}".encode() + b"x" * 10_000
        assert evaluate(m.Equality("cn", value), ENTRY) is False
        assert evaluate(m.Substrings("cn", value, (), None), ENTRY) is False
    assert filters._fold_memo.cache_info().currsize <= before + 1  # "rivera, ana" at most
