"""`[state]` and `[server]` config, and the small parsers of the scale-out plumbing: the bus
message and the supervisor's listen map (hostile input included, and a property test each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import ConfigError, loads
from bridge.runtime.worker import parse_mapping
from bridge.state.bus import decode, encode

STORE = '[store]\nplugin = "sqlite"\n'


def test_state_defaults_to_the_older_throttle_state() -> None:
    assert loads(STORE).state_backend == "sqlite"
    assert loads(STORE + '[throttle]\nstate = "memory"\n').state_backend == "memory"
    config = loads(STORE + '[throttle]\npath = "t.db"\n', base_dir=Path("/srv"))
    assert config.state_path == Path("/srv/t.db")
    assert loads(STORE + '[state]\nbackend = "redis"\n').state_backend == "redis"


def test_state_contradicting_throttle_state_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"state\.backend"):
        loads(STORE + '[throttle]\nstate = "memory"\n[state]\nbackend = "redis"\n')


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[server]\nworkers = 2\n[state]\nbackend = "memory"\n', "server.workers"),
        ("[server]\nworkers = 0\n", "server.workers"),
        ('[server]\nworkers = "many"\n', "server.workers"),
        ('[state]\nbackend = "redis"\nurl = "http://x"\n', "state.url"),
        ('[state]\nbackend = "redis"\nurl = "redis://:hunter2@h:6379/0"\n', "state.url"),
        ('[state]\nbackend = "redis"\non_state_unavailable = "ignore"\n', "on_state_unavailable"),
        ("[state]\nhosts = 0\n", "state.hosts"),
    ],
)
def test_bad_scale_out_config_is_one_line(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loads(STORE + text)
    message = str(caught.value)
    assert key in message and "\n" not in message and "hunter2" not in message


def test_redis_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "redis.pw").write_text("s3cret-redis\n")
    config = loads(
        STORE + '[state]\nbackend = "redis"\npassword_file = "redis.pw"\n', base_dir=tmp_path
    )
    assert config.state.password == "s3cret-redis"


def test_workers_auto_is_one_per_cpu() -> None:
    assert (
        loads(
            STORE + '[server]\nworkers = "auto"\n[state]\nbackend = "sqlite"\n'
        ).server.worker_count()
        >= 1
    )


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"invalidate",
        b"invalidate\t",
        b"evil\t212340",
        b"invalidate\t" + b"9" * 65,
        b"\xff\xfe",
        b"invalidate\t2123 4",
        b"invalidate\t21\x0034",
        b"clear_lock\t\t1",
    ],
)
def test_bus_rejects_what_is_not_ours(data: bytes) -> None:
    assert decode(data) is None


@given(st.binary(max_size=200))
def test_property_bus_decode_never_raises(data: bytes) -> None:
    got = decode(data)
    if got is not None:
        assert decode(encode(*got)) == got


@given(
    st.sampled_from(["invalidate", "clear_lock"]),
    st.text(alphabet="0123456789ABCDEF-", min_size=1, max_size=64),
)
def test_property_bus_round_trip(op: str, barcode: str) -> None:
    assert decode(encode(op, barcode)) == (op, barcode)


@pytest.mark.parametrize("text", ["", "[]", "{", '{"a": 1}', '"x"', "null", '{"a": ["b"]}'])
def test_listen_map_rejects_anything_but_an_object_of_strings(text: str) -> None:
    with pytest.raises(ConfigError, match="listen-map"):
        parse_mapping(text, "f.toml")


@given(st.text(max_size=200))
def test_property_listen_map_parses_or_refuses(text: str) -> None:
    try:
        mapping = parse_mapping(text, "f.toml")
    except ConfigError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
