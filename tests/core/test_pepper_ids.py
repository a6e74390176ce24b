"""The pepper id in a stored hash (`$pepper=N`, absent for pepper 1) and the hasher holding
several peppers: the parser never mistakes a damaged tag for a pepper, an older pepper's hash
verifies and asks for a re-hash, a raised KDF cost is counted by `kdf_outdated`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core import pepper as pepper_check
from bridge.core.pin import HashFormatError, KdfParams, PinHasher, split_pepper, tag_pepper
from bridge.core.secret import Secret

FAST = KdfParams(argon2_memory_kib=8192, argon2_iterations=1)
PIN = Secret("5961")


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {"1": os.urandom(32), "2": os.urandom(32)}


def test_untagged_and_tagged() -> None:
    base = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2g"
    assert split_pepper(base) == ("1", base)
    assert split_pepper(tag_pepper(base, "2")) == ("2", base)
    assert tag_pepper(base, "1") == base


@pytest.mark.parametrize(
    "tail",
    [
        "$pepper=",
        "$pepper=0",
        "$pepper=02",
        "$pepper=x",
        "$pepper=1234567",
        "$pepper=2 ",
        "$Pepper=2",
        "$pepper=2\n",
        "$pepper=-2",
        "$pepper=２",
    ],
)
def test_damaged_tags_are_not_peppers(tail: str) -> None:
    base = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2g"
    assert split_pepper(base + tail) == ("1", base + tail)  # left for the KDF parser to refuse


def test_truncated_and_legacy_strings() -> None:
    for text in ("", "$", "$pepper=2", "$2b$12$pepper=2", "$argon2id$", "$scrypt$$pepper=3"):
        pid, _ = split_pepper(text)
        assert pid in ("1", "3")
    assert split_pepper("$2b$12$pepper=2") == ("1", "$2b$12$pepper=2")  # never an ILS hash


def test_oversized_strings() -> None:
    huge = "$argon2id$" + "A" * 1_000_000 + "$pepper=2"
    assert split_pepper(huge)[0] == "2"
    assert split_pepper(huge + "9" * 1000)[0] == "1"


@given(st.text(max_size=300))
def test_split_never_raises_and_round_trips(text: str) -> None:
    pid, rest = split_pepper(text)
    assert pid.isdigit()
    assert tag_pepper(rest, pid) == text or pid == "1"


def test_old_pepper_verifies_and_asks_for_a_rehash(keys: dict[str, bytes]) -> None:
    old = PinHasher(keys["1"], FAST, workers=1)
    stored = old.hash_sync(PIN)
    assert "$pepper=" not in stored
    new = PinHasher(keys["1"], FAST, workers=1, rotated={"2": keys["2"]})
    assert new.current_id == "2"
    check = new.verify_sync(PIN, stored)
    assert check.ok and check.needs_rehash
    assert not new.verify_sync(Secret("4826"), stored).ok
    fresh = new.hash_sync(PIN)
    assert fresh.endswith("$pepper=2")
    check = new.verify_sync(PIN, fresh)
    assert check.ok and not check.needs_rehash
    with pytest.raises(HashFormatError) as raised:
        old.verify_sync(PIN, fresh)  # pepper 2 is not held: a format error, not a wrong PIN
    assert "5961" not in str(raised.value)
    with pytest.raises(HashFormatError):
        new.verify_sync(PIN, fresh.replace("$pepper=2", "$pepper=9"))
    for h in (old, new):
        h.close()


def test_added_peppers_verify_and_write_once_activated(keys: dict[str, bytes]) -> None:
    """A reload adds a pepper verify-only; `set_writer` (the store's `pepper-active`) makes it
    the writer; a hash made with a newer pepper than the writer is never re-hashed back."""
    hasher = PinHasher(keys["1"], FAST, workers=1)
    stored = hasher.hash_sync(PIN)
    assert hasher.add_peppers({"2": keys["2"]}) == "1"  # staged: still writes pepper 1
    assert hasher.pepper_ids() == ["1", "2"]
    assert not hasher.verify_sync(PIN, stored).needs_rehash
    assert not hasher.hash_sync(PIN).endswith("$pepper=2")
    other = PinHasher(keys["1"], FAST, workers=1, rotated={"2": keys["2"]})
    newer = other.hash_sync(PIN)
    assert newer.endswith("$pepper=2")
    check = hasher.verify_sync(PIN, newer)
    assert check.ok and not check.needs_rehash  # no downgrade to pepper 1
    hasher.set_writer("2")
    assert hasher.verify_sync(PIN, stored).needs_rehash
    assert hasher.hash_sync(PIN).endswith("$pepper=2")
    with pytest.raises(HashFormatError):
        hasher.set_writer("3")
    for h in (hasher, other):
        h.close()


def test_kdf_outdated(keys: dict[str, bytes]) -> None:
    hasher = PinHasher(keys["1"], FAST, workers=1)
    stored = tag_pepper(hasher.hash_sync(PIN), "1")
    assert not hasher.kdf_outdated(stored)
    stronger = PinHasher(keys["1"], KdfParams(argon2_memory_kib=9216, argon2_iterations=1))
    assert stronger.kdf_outdated(stored) and stronger.kdf_outdated(stored + "$pepper=2")
    assert stronger.verify_sync(PIN, stored).needs_rehash
    scrypt = PinHasher(keys["1"], KdfParams(algorithm="scrypt", scrypt_log2_n=10), workers=1)
    made = scrypt.hash_sync(PIN)
    assert not scrypt.kdf_outdated(made) and hasher.kdf_outdated(made)
    assert scrypt.kdf_outdated("$scrypt$") and scrypt.kdf_outdated("$scrypt")
    assert hasher.kdf_outdated("$argon2id$") and hasher.kdf_outdated("$argon2id$$pepper=2")
    for h in (hasher, stronger, scrypt):
        h.close()


def test_rotated_files_and_judging(tmp_path: Path) -> None:
    base = tmp_path / "pepper.key"
    base.write_bytes(os.urandom(32))
    for name in ("pepper.key.2", "pepper.key.3", "pepper.key.01", "pepper.key.x", "pepper.key.1"):
        (tmp_path / name).write_bytes(os.urandom(32))
    rotated = pepper_check.load_rotated(base)
    assert [p.id for p in rotated] == ["2", "3"]
    stored = pepper_check.StoredPepper({"1": "x", "2": rotated[0].fingerprint}, True)
    assert [p.id for p in pepper_check.judge_rotated(base, rotated, stored)] == ["3"]
    with pytest.raises(pepper_check.PepperMissing, match=r"pepper\.key\.2"):
        pepper_check.judge_rotated(base, rotated[1:], stored)
    wrong = pepper_check.StoredPepper({"2": "hmac-sha256:00"}, True)
    with pytest.raises(pepper_check.PepperMismatch, match=r"pepper\.key\.2"):
        pepper_check.judge_rotated(base, rotated, wrong)
    (tmp_path / "pepper.key.4").write_bytes(b"short")
    with pytest.raises(pepper_check.PepperDamaged, match=r"pepper\.key\.4"):
        pepper_check.load_rotated(base)
    assert pepper_check.load_rotated(tmp_path / "none" / "pepper.key") == []
