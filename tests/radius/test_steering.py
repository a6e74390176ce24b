"""The worker-steering program (`bridge.radius.steering`), run in a classic BPF interpreter
with the kernel's rules against its plain-Python reference. The kernel runs it in
tests/runtime/test_steering.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius import steering
from tests.radius.cbpf import run

STATE = steering.STATE


def packet(*attributes: tuple[int, bytes], authenticator: bytes = bytes(range(16))) -> bytes:
    body = b"".join(bytes((kind, len(value) + 2)) + value for kind, value in attributes)
    return bytes((1, 7)) + (20 + len(body)).to_bytes(2, "big") + authenticator + body


def worker(data: bytes, workers: int) -> int:
    answer = run(steering.program(workers), data)
    assert answer == steering.expected_worker(data, workers)
    return answer


def test_a_state_that_names_a_worker_goes_to_it() -> None:
    eap = [(1, b"anonymous"), (79, os.urandom(200)), (79, os.urandom(253)), (80, bytes(16))]
    for index in range(4):
        state = bytes([index]) + os.urandom(16)
        assert worker(packet(*eap[:2], (STATE, state), *eap[2:]), 4) == index
        assert worker(packet(*eap, (STATE, state)), 4) == index


def test_a_patron_goes_by_the_user_name() -> None:
    """Without State or Calling-Station-Id (PAP from PC software, a VPN): one card's requests
    meet one worker, whose verified cache holds it."""
    for barcode in (b"21234000000001", b"21234000000002", b"21234000000003"):
        expected = int.from_bytes(barcode[-4:], "big") % 3
        for _ in range(5):
            data = packet((1, barcode), (2, bytes(16)), authenticator=os.urandom(16))
            assert worker(data, 3) == expected
    station = packet((1, b"21234000000001"), (31, b"02-00-00-00-00-07"))
    assert worker(station, 3) == int.from_bytes(b"0-07", "big") % 3  # the device first


def test_everything_else_goes_by_the_authenticator() -> None:
    auth = (0x12345679).to_bytes(4, "big") + bytes(12)
    assert worker(packet((4, bytes(4)), (2, bytes(16)), authenticator=auth), 3) == 0x12345679 % 3
    assert worker(packet((1, b"abc"), authenticator=auth), 3) == 0x12345679 % 3  # too short
    foreign = bytes([9]) + bytes(16)  # a State that names no worker (a proxy's own)
    assert worker(packet((STATE, foreign), authenticator=auth), 3) == 0x12345679 % 3
    assert worker(packet((STATE, b""), authenticator=auth), 3) == 0x12345679 % 3
    beyond = [(26, bytes(4))] * steering.MAX_ATTRIBUTES + [(STATE, bytes([1]) + bytes(16))]
    assert worker(packet(*beyond, authenticator=auth), 3) == 0x12345679 % 3


def test_a_device_goes_by_its_calling_station_id() -> None:
    """A device's conversations (and so its TLS resumptions) meet one worker, from any access
    point; a State that names a worker still wins."""
    station = (31, b"AA-BB-CC-DD-EE-F3")
    expected = int.from_bytes(b"E-F3", "big") % 3
    for _ in range(20):
        auth = os.urandom(16)
        assert worker(packet((1, b"anonymous"), station, (79, b"x"), authenticator=auth), 3) == (
            expected
        )
        state = bytes([(expected + 1) % 3]) + bytes(16)
        assert worker(packet(station, (STATE, state), authenticator=auth), 3) == state[0]
        assert worker(packet((STATE, state), station, authenticator=auth), 3) == state[0]
    short = (31, b"abc")  # too short to hash: by the Authenticator
    assert worker(packet(short, authenticator=bytes(3) + b"\x05" + bytes(12)), 3) == 5 % 3


def test_a_nas_that_counts_in_its_authenticator_still_spreads() -> None:
    """A constant first half (a boot id) and a counter after it: all four words count."""
    boot = os.urandom(8)
    seen = {
        worker(packet((1, b"x"), authenticator=boot + bytes(4) + n.to_bytes(4, "big")), 2)
        for n in range(8)
    }
    assert seen == {0, 1}


def test_requests_spread_and_copies_agree() -> None:
    seen = [worker(packet((1, b"x"), authenticator=os.urandom(16)), 2) for _ in range(400)]
    assert 120 < seen.count(0) < 280  # 16 random bytes a request: about half each


MALFORMED = [b"", b"\x01", b"\x01\x07\x00", bytes(7), bytes(8), bytes(19), bytes(20), bytes(21)]
MALFORMED += [bytes(20) + b"\x18", bytes(20) + b"\x18\x03", bytes(20) + b"\x05\x00" + bytes(30)]
MALFORMED += [bytes(20) + b"\x05\x01" + bytes(30), bytes(20) + b"\x05\xff", bytes(4096)]


@pytest.mark.parametrize("data", MALFORMED)
def test_truncated_and_malformed_packets(data: bytes) -> None:
    assert worker(data, 2) in (0, 1)


def test_the_program_is_one_the_kernel_takes() -> None:
    for workers in (2, 3, 16, steering.MAX_WORKERS):
        code = steering.program(workers)
        assert len(code) <= 4096  # BPF_MAXINSNS
        for at, (op, jt, jf, k) in enumerate(code):
            assert jt < 256 and jf < 256
            if op == steering.JA:
                assert at + 1 + k < len(code)
            elif op in (steering.JEQ_K, steering.JGE_K, steering.JGE_X):
                assert at + 1 + max(jt, jf) < len(code)
        assert code[-1][0] in (steering.RET_A, steering.RET_K)
        assert len(steering.encode(code)) == 8 * len(code)
    for bad in (0, 1, 256):
        with pytest.raises(ValueError, match="workers"):
            steering.program(bad)


@given(st.binary(max_size=600), st.integers(2, 9))
def test_property_any_bytes(data: bytes, workers: int) -> None:
    assert 0 <= worker(data, workers) < workers


kinds = st.one_of(st.integers(0, 255), st.sampled_from([1, 24, 31]))
attribute = st.tuples(kinds, st.binary(max_size=40)).map(lambda kv: (kv[0], kv[1]))


@given(
    st.lists(attribute, max_size=80),
    st.integers(0, 80),
    st.binary(min_size=0, max_size=20),
    st.binary(min_size=16, max_size=16),
    st.integers(2, 9),
    st.integers(0, 40),
)
def test_property_well_formed_packets(
    attributes: list[tuple[int, bytes]],
    where: int,
    state: bytes,
    authenticator: bytes,
    workers: int,
    cut: int,
) -> None:
    attributes.insert(min(where, len(attributes)), (STATE, state))
    data = packet(*attributes, authenticator=authenticator)
    assert 0 <= worker(data, workers) < workers
    worker(data[: max(0, len(data) - cut)], workers)  # truncated anywhere
