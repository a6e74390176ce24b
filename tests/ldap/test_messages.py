"""The LDAP message codec against ldap3 as the oracle, both directions, plus strictness."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ldap import ber, filters
from bridge.ldap import messages as m
from bridge.ldap.ber import ProtocolError
from tests.ldap import oracle
from tests.pins import DEMO_PIN

# --- requests: ldap3 encodes, we decode ------------------------------------------------------


def test_bind_request_with_ppolicy_control() -> None:
    pdu = oracle.bind(7, "uid=1,ou=patrons,dc=x", DEMO_PIN.encode(), [(m.OID_PPOLICY, False, None)])
    msg = m.decode(pdu)
    assert msg.id == 7
    assert isinstance(msg.op, m.BindRequest)
    assert msg.op.version == 3 and msg.op.name == "uid=1,ou=patrons,dc=x"
    assert msg.op.password is not None and msg.op.password.matches(DEMO_PIN)
    assert DEMO_PIN not in repr(msg)
    assert msg.control(m.OID_PPOLICY) == m.Control(m.OID_PPOLICY, False, None)


def test_search_request_fields_and_paged_control() -> None:
    paged = m.paged_response(100, b"")  # same shape as the request value
    pdu = oracle.search(
        9,
        "ou=patrons,dc=x",
        "(&(uid=21234000000001)(objectClass=inetOrgPerson))",
        scope=1,
        attrs=["cn", "mail", "1.1"],
        size=5,
        time=3,
        controls=[(m.OID_PAGED_RESULTS, True, paged.value)],
    )
    msg = m.decode(pdu)
    op = msg.op
    assert isinstance(op, m.SearchRequest)
    assert (op.base, op.scope, op.size_limit, op.time_limit) == ("ou=patrons,dc=x", 1, 5, 3)
    assert op.attributes == ("cn", "mail", "1.1")
    assert op.filter == m.And(
        (m.Equality("uid", b"21234000000001"), m.Equality("objectClass", b"inetOrgPerson"))
    )
    control = msg.control(m.OID_PAGED_RESULTS)
    assert control is not None and control.critical
    assert m.decode_paged(control.value) == m.PagedRequest(100, b"")


def test_compare_and_extended_requests() -> None:
    msg = m.decode(oracle.compare(3, "cn=ADULT,ou=groups,dc=x", "member", "uid=1,dc=x"))
    assert msg.op == m.CompareRequest("cn=ADULT,ou=groups,dc=x", "member", b"uid=1,dc=x")
    msg = m.decode(oracle.extended(4, m.OID_WHOAMI))
    assert msg.op == m.ExtendedRequest(m.OID_WHOAMI, None)


def test_password_modify_value() -> None:
    value = ber.sequence(
        ber.octets(b"uid=1,dc=x", 0x80), ber.octets(b"1111", 0x81), ber.octets(b"2222", 0x82)
    )
    req = m.decode_passwd_modify(value)
    assert req.user == "uid=1,dc=x"
    assert req.old is not None and req.old.matches("1111")
    assert req.new is not None and req.new.matches("2222")
    assert m.decode_passwd_modify(None) == m.PasswdModify(None, None, None)
    with pytest.raises(ProtocolError):
        m.decode_passwd_modify(ber.sequence(ber.octets(b"x", 0x82), ber.octets(b"y", 0x80)))


def test_write_operations_decode_to_their_response_type() -> None:
    for request, response in m.UNSUPPORTED.items():
        body = ber.octets(b"uid=1,dc=x") if request != m.DEL_REQUEST else b""
        pdu = ber.sequence(ber.integer(2), ber.tlv(request, body))
        assert m.decode(pdu).op == m.Unsupported(response)


@pytest.mark.parametrize(
    "pdu",
    [
        ber.sequence(ber.integer(1), ber.tlv(0x61, b"")),  # a response, not a request
        ber.sequence(ber.integer(-1), ber.tlv(0x42, b"")),  # negative message id
        ber.sequence(ber.integer(1)),  # no operation
        ber.sequence(ber.integer(1), ber.tlv(0x42, b""), b"\x04\x00"),  # junk after op
        ber.sequence(ber.integer(1), ber.tlv(0x60, ber.integer(3) + ber.octets(b"x"))),
    ],
)
def test_malformed_messages_raise(pdu: bytes) -> None:
    with pytest.raises(ProtocolError):
        m.decode(pdu)


def test_deep_filters_are_refused() -> None:
    inner = ber.tlv(0x87, b"cn")
    for _ in range(m.MAX_FILTER_DEPTH + 2):
        inner = ber.tlv(0xA2, inner)
    body = (
        ber.octets(b"")
        + ber.enumerated(0)
        + ber.enumerated(0)
        + ber.integer(0)
        + ber.integer(0)
        + ber.boolean(False)
        + inner
        + ber.sequence()
    )
    with pytest.raises(ProtocolError, match="deeply"):
        m.decode(ber.sequence(ber.integer(1), ber.tlv(0x63, body)))


# --- filters: generated, rendered to RFC 4515 text, encoded by ldap3, decoded by us ----------

ATTRS = st.sampled_from(["uid", "mail", "cn", "objectClass", "employeeType", "sn"])
VALUES = st.binary(min_size=1, max_size=12)


def _leaf() -> st.SearchStrategy[m.Filter]:
    return st.one_of(
        st.builds(m.Equality, ATTRS, VALUES),
        st.builds(m.GreaterOrEqual, ATTRS, VALUES),
        st.builds(m.LessOrEqual, ATTRS, VALUES),
        st.builds(m.Approx, ATTRS, VALUES),
        st.builds(m.Present, ATTRS),
        st.builds(
            m.Substrings,
            ATTRS,
            st.one_of(st.none(), VALUES),
            st.lists(VALUES, max_size=2).map(tuple),
            st.one_of(st.none(), VALUES),
        ).filter(lambda s: s.initial is not None or s.any or s.final is not None),
    )


FILTERS = st.recursive(
    _leaf(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda x: m.And(tuple(x))),
        st.lists(inner, min_size=1, max_size=3).map(lambda x: m.Or(tuple(x))),
        inner.map(m.Not),
    ),
    max_leaves=8,
)


@given(FILTERS)
def test_property_filters_ldap3_encodes_we_decode(f: m.Filter) -> None:
    pdu = oracle.search(1, "dc=x", filters.text(f))
    op = m.decode(pdu).op
    assert isinstance(op, m.SearchRequest)
    assert op.filter == f


# --- responses: we encode, ldap3 decodes -----------------------------------------------------


@given(
    st.integers(min_value=0, max_value=m.MAX_INT32),
    st.sampled_from([0, 4, 32, 49, 52, 53]),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_property_results_ldap3_decodes(msgid: int, code: int, diag: str, matched: str) -> None:
    got = oracle.decode(m.result(msgid, m.SEARCH_RESULT_DONE, code, diag, matched))
    assert got["messageID"] == msgid and got["protocolOp"] == 5
    payload = got["payload"]
    assert payload[0][3] == code
    assert payload[1][3] == matched.encode() and payload[2][3] == diag.encode()


@given(
    st.text(max_size=30),
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefghij", min_size=1, max_size=8),
            st.lists(st.binary(max_size=200), max_size=3),
        ),
        max_size=5,
    ),
)
def test_property_entries_ldap3_decodes(dn: str, attrs: list[tuple[str, list[bytes]]]) -> None:
    got = oracle.decode(m.entry(3, dn, attrs))
    assert got["protocolOp"] == 4
    name, attributes = got["payload"]
    assert name[3] == dn.encode()
    decoded = [(a[3][0][3].decode(), [v[3] for v in a[3][1][3]]) for a in attributes[3]]
    assert decoded == attrs


def test_controls_and_extended_responses_ldap3_decodes() -> None:
    got = oracle.decode(
        m.result(5, m.BIND_RESPONSE, 49, "account locked", controls=[m.ppolicy_response(1)])
    )
    control = got["controls"][0][3]
    assert control[0][3] == m.OID_PPOLICY.encode()
    assert control[1][3] == b"\x30\x03\x81\x01\x01"  # error [1] accountLocked
    notice = oracle.decode(m.notice_of_disconnection(2, "malformed PDU"))
    assert notice["messageID"] == 0 and notice["protocolOp"] == 24
    assert notice["payload"][0][3] == 2
    assert notice["payload"][3][3] == m.OID_NOTICE_OF_DISCONNECTION.encode()


# --- anything parses or raises ---------------------------------------------------------------


@given(st.binary(max_size=200))
def test_property_random_bytes_decode_or_raise(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        m.decode(data)


@given(st.data())
def test_property_mutated_requests_decode_or_raise(data: st.DataObject) -> None:
    pdu = bytearray(
        oracle.search(4, "ou=patrons,dc=x", "(&(uid=1)(|(mail=a*b)(!(cn=x))))", attrs=["cn"])
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        pos = data.draw(st.integers(min_value=0, max_value=len(pdu) - 1))
        pdu[pos] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(pdu)))
    with contextlib.suppress(ProtocolError):
        m.decode(bytes(pdu[:cut]))


@given(st.one_of(st.none(), st.binary(max_size=40)))
def test_property_control_and_exop_values_decode_or_raise(value: bytes | None) -> None:
    for decoder in (m.decode_paged, m.decode_passwd_modify):
        with contextlib.suppress(ProtocolError):
            decoder(value)


# --- the one-pass reader agrees with the general one ------------------------------------------


def _same(pdu: bytes) -> tuple[object, ...] | str:
    """What the general reader makes of `pdu`, comparable (the password as its octets)."""
    try:
        msg = m._general(pdu)
    except ProtocolError as exc:
        return str(exc)
    op = msg.op
    if isinstance(op, m.BindRequest):
        secret = None if op.password is None else op.password.reveal()
        return (msg.id, op.version, op.name, secret, op.sasl_mechanism, msg.controls)
    return (msg.id, op, msg.controls)


def _quick_agrees(pdu: bytes) -> None:
    general = _same(pdu)
    try:
        quick = m._quick(pdu)
    except (IndexError, UnicodeDecodeError):
        quick = None
    if quick is None:
        return  # the general reader answers
    op = quick.op
    if isinstance(op, m.BindRequest):
        secret = None if op.password is None else op.password.reveal()
        assert (quick.id, op.version, op.name, secret, op.sasl_mechanism, ()) == general
    else:
        assert (quick.id, op, ()) == general


QUICK_SHAPES = [
    oracle.bind(7, "uid=21234000000001,ou=patrons,dc=library,dc=example", b"4921"),
    ber.sequence(  # anonymous
        ber.integer(2),
        ber.tlv(m.BIND_REQUEST, ber.integer(3) + ber.octets("") + ber.tlv(0x80, b"")),
    ),
    oracle.search(
        300,
        "dc=library,dc=example",
        "(&(objectClass=inetOrgPerson)(uid=21234000000001))",
        attrs=["cn", "mail"],
    ),
    oracle.search(70000, "ou=patrons,dc=x", "(uid=1)", scope=1, size=5, time=3),
    oracle.search(1, "o=" + "x" * 100, "(objectClass=person)", attrs=["*"]),
]


def test_quick_reader_reads_the_usual_shapes() -> None:
    for pdu in QUICK_SHAPES:
        assert m._quick(pdu) is not None
        _quick_agrees(pdu)


@given(st.data())
def test_property_quick_reader_agrees_with_the_general_one(data: st.DataObject) -> None:
    pdu = bytearray(data.draw(st.sampled_from(QUICK_SHAPES)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        pos = data.draw(st.integers(min_value=0, max_value=len(pdu) - 1))
        pdu[pos] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(pdu)))
    _quick_agrees(bytes(pdu[:cut]))
    _quick_agrees(bytes(pdu))
