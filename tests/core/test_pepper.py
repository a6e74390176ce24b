"""The pepper's fingerprint and the start-up verdict, every case of the table in
bridge/core/pepper.py, and the file the bridge creates (0600, never over an existing one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.pepper import (
    Pepper,
    PepperDamaged,
    PepperMismatch,
    PepperMissing,
    StoredPepper,
    confirm,
    fingerprint,
    judge,
    load_pepper,
    state,
)


def test_fingerprint_is_stable_distinct_and_reveals_nothing() -> None:
    a, b = os.urandom(32), os.urandom(32)
    assert fingerprint(a) == fingerprint(a) != fingerprint(b)
    assert a.hex() not in fingerprint(a) and fingerprint(a).startswith("hmac-sha256:")


@given(st.binary(min_size=16, max_size=128), st.binary(min_size=16, max_size=128))
def test_judge_accepts_exactly_the_recorded_pepper(mine: bytes, recorded: bytes) -> None:
    stored = StoredPepper({"1": fingerprint(recorded)}, has_hashes=True)
    if mine == recorded:
        assert judge(Pepper(Path("p"), mine), stored) is False  # nothing to record
    else:
        with pytest.raises(PepperMismatch):
            judge(Pepper(Path("p"), mine), stored)


def test_verdicts() -> None:
    old, new = Pepper(Path("p"), b"k" * 32), Pepper(Path("p"), b"n" * 32, new=True)
    empty = StoredPepper()
    assert judge(old, empty) is True and judge(new, empty) is True  # record it
    # an older store: hashes, no fingerprint yet
    assert judge(old, StoredPepper({}, has_hashes=True)) is True
    with pytest.raises(PepperMissing, match="does not exist"):
        judge(new, StoredPepper({}, has_hashes=True))
    with pytest.raises(PepperMissing):
        judge(new, StoredPepper({"1": fingerprint(b"n" * 32)}))  # even an equal one: no file
    # another pepper id recorded (rotation): this one is still to record
    assert judge(old, StoredPepper({"2": fingerprint(b"x" * 32)}, has_hashes=True)) is True
    confirm(old, fingerprint(b"k" * 32))
    with pytest.raises(PepperMismatch, match="another host"):
        confirm(old, fingerprint(b"z" * 32))


def test_load_makes_a_pepper_in_memory_and_persist_writes_it_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "pepper.key"
    pepper = load_pepper(path)
    assert pepper.new and not path.exists()  # nothing written before the store agrees
    assert pepper.persist() is True and pepper.persist() is False
    assert path.read_bytes() == pepper.data and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    again = load_pepper(path)
    assert not again.new and again.data == pepper.data
    assert "data" not in repr(again) or pepper.data.hex() not in repr(again)


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 15])
def test_a_truncated_pepper_file_is_damaged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pepper.key"
    path.write_bytes(content)
    with pytest.raises(PepperDamaged):
        load_pepper(path)
    assert state(path, None)["state"] == "damaged (shorter than 16 bytes)"


def test_state_reports(tmp_path: Path) -> None:
    path = tmp_path / "pepper.key"
    assert state(path, None)["state"] == "missing: created at first start"
    assert str(state(path, StoredPepper({}, True))["state"]).startswith("MISSING")
    path.write_bytes(b"k" * 32)
    assert state(path, StoredPepper({"1": fingerprint(b"k" * 32)}, True))["state"] == (
        "matches the store"
    )
    assert str(state(path, StoredPepper({"1": fingerprint(b"j" * 32)}, True))["state"]).startswith(
        "WRONG"
    )
    assert b"k".hex() * 32 not in str(state(path, None))
