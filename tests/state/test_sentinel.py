"""Redis Sentinel: the daemon finds the primary through a sentinel, and after a real failover
(the primary SIGKILLed, the replica promoted) it finds the new one by itself, with the lock
budget carried over. A private primary, replica and sentinel of the test's own (never the
machine's shared Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, load, masked
from tests.harness import DEMO, Daemon, base_config
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.state import scenario
from tests.state.redis_server import PrivateSentinelSet


def sentinel_state(ports: list[int], service: str, ca_file: Path | None = None) -> str:
    listed = ", ".join(f'"127.0.0.1:{port}"' for port in ports)
    tls = f'url = "rediss:///0"\ntls_ca_file = "{ca_file}"' if ca_file else 'url = "redis:///0"'
    return f"""
[state]
backend = "redis"
{tls}
sentinels = [{listed}]
sentinel_service = "{service}"
key_prefix = "pbsentinel:"
on_state_unavailable = "refuse"
retry_seconds = 0.2
connect_timeout = 0.5
command_timeout = 0.5
"""


def bad_pins(daemon: Daemon, lines: int) -> int:
    """Evaluated wrong PINs among the first `lines` audited decisions (waited for)."""
    return [e["outcome"] for e in scenario.audited([daemon], lines)].count("bad_pin")


@pytest.mark.parametrize(
    ("count", "quorum", "first_dies", "tls", "passwords"),
    [
        (1, 1, False, False, False),
        (3, 2, True, False, False),
        (1, 1, False, True, False),
        (3, 2, False, False, True),
    ],
    ids=[
        "one-sentinel",
        "three-sentinels-first-listed-dies-too",
        "tls-everywhere",
        "passwords-on-data-nodes-and-sentinels",
    ],
)
def test_the_lock_budget_survives_a_failover(
    tmp_path: Path, count: int, quorum: int, first_dies: bool, tls: bool, passwords: bool
) -> None:
    """With three sentinels (quorum 2) the first one listed dies with the primary: the other
    two elect, and the daemon asks the next sentinel in its list. With TLS, the sentinels,
    the data nodes and replication speak TLS only, verified against `tls_ca_file`."""
    (tmp_path / "daemon").mkdir()
    (tmp_path / "redis").mkdir()
    card, other = DEMO["minor"], DEMO["active"]
    secrets = {"password": "data-nodes-pass-1", "sentinel_password": "sentinels-pass-1"}
    chosen = secrets if passwords else {}
    with PrivateSentinelSet(tmp_path / "redis", count, quorum, tls=tls, **chosen) as cluster:
        ca_file = cluster.ca_file if tls else None
        sections = scenario.LDAP + sentinel_state(cluster.sentinel_ports, cluster.SERVICE, ca_file)
        for name, value in chosen.items():  # as the docs show: each from a file of its own
            (tmp_path / "daemon" / f"{name}.txt").write_text(value + "\n")
            sections += f'{name}_file = "{name}.txt"\n'
        with Daemon(tmp_path / "daemon", sections, throttle=scenario.THROTTLE) as daemon:
            assert scenario.bind(daemon, card, DEMO_PIN) == 0  # the card's PIN works
            assert scenario.bind(daemon, other, DEMO_PIN) == 0
            for _ in range(3):
                assert scenario.bind(daemon, card, WRONG_PIN) == 49
            assert cluster.replicated() == 1  # the replica holds the three failures
            first = cluster.named_primary()
            cluster.kill_primary()
            if first_dies:
                cluster.kill_sentinel(0)
            alive = count - 1 if first_dies else 0
            promoted = ("127.0.0.1", cluster.replica.port)
            assert scenario.within(30, lambda: cluster.named_primary(alive) == promoted != first)
            # The daemon finds the new primary by asking the sentinel again, with no restart
            # (its pub/sub listener too: the verified cache comes back on).
            assert scenario.within(30, lambda: "verified_cache_on" in daemon.logs())
            assert scenario.bind(daemon, other, DEMO_PIN) == 0
            for _ in range(scenario.LOCK_AFTER + 2):
                assert scenario.bind(daemon, card, WRONG_PIN) != 0
            # Three failures before the failover and two after lock the card: the budget
            # was not reset by the failover (it would have allowed five more).
            assert bad_pins(daemon, 6 + scenario.LOCK_AFTER + 2) == scenario.LOCK_AFTER
            assert scenario.bind(daemon, card, DEMO_PIN) != 0  # locked: the right PIN too
        log = daemon.stderr_path.read_text()
        assert '"event":"state_bus_lost"' in log and '"event":"verified_cache_on"' in log


@pytest.mark.parametrize(
    ("entries", "url", "error"),
    [
        ('["127.0.0.1"]', "redis://127.0.0.1/0", "bad sentinel address"),
        ('["127.0.0.1:0"]', "redis://127.0.0.1/0", "bad sentinel address"),
        ('["[::1:26379"]', "redis://127.0.0.1/0", "bad sentinel address"),
        ('["127.0.0.1:26379"]', "unix:///run/redis.sock", "want redis:// or rediss://"),
        ('["127.0.0.1:26379"]', "redis:///zero", "the database number"),
    ],
)
def test_bad_sentinel_settings_are_refused(
    tmp_path: Path, entries: str, url: str, error: str
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        base_config(tmp_path)
        + f'\n[state]\nbackend = "redis"\nurl = "{url}"\nsentinels = {entries}\n'
    )
    with pytest.raises(ConfigError, match=error):
        load(config)


def test_sentinel_settings_are_accepted(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        base_config(tmp_path)
        + '\n[state]\nbackend = "redis"\nurl = "rediss://ignored/2"\n'
        + 'sentinels = ["10.0.0.5:26379", "[2001:db8::7]:26379"]\nsentinel_service = "pb"\n'
        + 'sentinel_password_env = "PB_SENTINEL_TEST"\n'
    )
    import os

    os.environ["PB_SENTINEL_TEST"] = "s3ntinel-pass"
    try:
        loaded = load(config)
    finally:
        del os.environ["PB_SENTINEL_TEST"]
    state = loaded.state
    assert masked(loaded)["state"]["sentinel_password"] == "***"  # `check-config` prints it masked
    assert state.sentinels == ["10.0.0.5:26379", "[2001:db8::7]:26379"]
    assert state.sentinel_service == "pb" and state.sentinel_password == "s3ntinel-pass"
