"""The OpenID Connect provider on several hosts and workers behind one issuer: codes, tokens,
pending sign-ins and single sign-on sessions live in the `[state]` backend.

Two daemons (A and B, one issuer, the same signing and pairwise keys, as a load balancer would
front them) share Redis, or the postgres store's database. A sign-in started on A is finished on
B; a code issued by B is redeemed at A; a replay at B of that code is refused and revokes the
token A gave; a token from one works at the other's UserInfo; SSO made on one is honoured by the
other and a logout at one ends it at the other; a restart of A loses nothing. One daemon with
`workers = 2` does the same across the kernel's choice of worker, and one process with the
default SQLite state keeps its codes and sessions across a restart.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.federation.support import (
    RP,
    SECRET,
    Flow,
    code_of,
    error_of,
    form_fields,
    redeem,
    sections,
    userinfo,
)
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.portal.support import free_port
from tests.state.redis_server import shared_prefix
from tests.state.scenario import within

FLOW = Flow("vendor", RP, scope="openid profile email")
VENDOR = ("vendor", SECRET)
SHARED_FILES = ("pepper.key", "oidc-keys.json", "oidc-pairwise.key", "vendor-secret")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


@contextmanager
def two_hosts(
    tmp: Path, state: str, store: str, throttle: str = "", files: tuple[str, ...] = SHARED_FILES
) -> Iterator[tuple[Daemon, str, str]]:
    """A and B serving one issuer (A's URL) on their own ports; B gets A's key `files`."""
    a_port, b_port = free_port(), free_port()
    a_dir, b_dir = tmp / "a", tmp / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    (a_dir / "vendor-secret").write_text(SECRET + "\n")
    a = Daemon(a_dir, sections(a_port) + state, store=store, throttle=throttle).start()
    try:
        for name in files:
            shutil.copy(a_dir / name, b_dir / name)
        b_sections = sections(b_port, issuer_port=a_port) + state
        b = Daemon(b_dir, b_sections, store=store, throttle=throttle).start()
        try:
            yield a, url(a_port), url(b_port)
        finally:
            b.stop()
    finally:
        a.stop()


def sign_in_across(http: httpx.Client, start: str, finish: str) -> str:
    """Authorize at `start`, post the sign-in form to `finish`: the code it redirects with."""
    page = http.get(f"{start}/oidc/authorize?{FLOW.query()}")
    assert page.status_code == 200, page.text
    fields = {**form_fields(page.text), "barcode": DEMO["active"], "pin": DEMO_PIN}
    return code_of(http.post(f"{finish}/oidc/login", data=fields), RP)


def silent(http: httpx.Client, base: str) -> httpx.Response:
    """An authorize with prompt=none: a code when the SSO session is live there."""
    return http.get(f"{base}/oidc/authorize?{FLOW.query(prompt='none')}")


def across_hosts(a: Daemon, issuer: str, b_url: str, tmp: Path) -> None:
    a_url = issuer
    with httpx.Client(timeout=30) as http:
        code = sign_in_across(http, a_url, b_url)  # parked on A, signed in on B
        first = redeem(a_url, code, RP, VENDOR)  # issued by B, redeemed at A
        assert first.status_code == 200, first.text
        token = first.json()["access_token"]
        info = userinfo(b_url, token)  # A's token at B's UserInfo
        assert info.status_code == 200 and info.json()["name"] == "Rivera, Ana"
        replay = redeem(b_url, code, RP, VENDOR)  # the same code again, at B
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert userinfo(a_url, token).status_code == 401  # revoked everywhere
        assert userinfo(b_url, token).status_code == 401

        # The SSO session B made is honoured by A; a logout at A ends it at B.
        code = code_of(silent(http, a_url), RP)
        assert redeem(b_url, code, RP, VENDOR).status_code == 200
        assert http.get(f"{a_url}/oidc/logout").status_code == 200
        assert error_of(silent(http, b_url)) == "login_required"

        # A restart of A loses neither a code issued before it nor the SSO session.
        code = sign_in_across(http, b_url, b_url)
        a.stop()
        a.start()
        assert code_of(silent(http, a_url), RP)
        again = redeem(a_url, code, RP, VENDOR)
        assert again.status_code == 200, again.text
        assert userinfo(b_url, again.json()["access_token"]).status_code == 200

        # A PIN set through A's CLI ends the patron's SSO session on every host.
        assert code_of(silent(http, b_url), RP)
        done = a.cli("pin", "set", "--stdin", DEMO["active"], input=NEW_PIN + "\n")
        assert done.returncode == 0, done.stderr
        assert within(5, lambda: silent(http, b_url).headers["location"].find("login_required") > 0)
        assert error_of(silent(http, a_url)) == "login_required"
    a.stop()
    replays = [e for e in a.audit_events() if e.get("event") == "oidc_code_replayed"]
    assert replays == []  # B saw the replay, not A
    assert not (tmp / "a" / "audit.log").read_text().count(DEMO_PIN)


def test_two_hosts_share_redis(tmp_path: Path) -> None:
    with shared_prefix() as (redis_url, prefix), servers.pg_database() as dbname:
        state = f'\n[state]\nbackend = "redis"\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\n'
        with two_hosts(tmp_path, state, store_toml(dbname)) as (a, issuer, b_url):
            across_hosts(a, issuer, b_url, tmp_path)


def test_two_hosts_share_postgres(tmp_path: Path) -> None:
    with servers.pg_database() as dbname:
        hosts = two_hosts(tmp_path, "", store_toml(dbname), throttle='state = "store"')
        with hosts as (a, issuer, b_url):
            across_hosts(a, issuer, b_url, tmp_path)


def test_two_workers_share_the_sqlite_state(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "vendor-secret").write_text(SECRET + "\n")
    config = sections(port) + '\n[server]\nworkers = 2\n[state]\nbackend = "sqlite"\n'
    with Daemon(tmp_path, config) as daemon:
        assert len(daemon.workers) == 2
        base = url(port)
        with httpx.Client(timeout=30) as http:
            first = sign_in_across(http, base, base)
        codes = [first]
        # New connections each time: the kernel spreads them over both workers.
        for _ in range(10):
            with httpx.Client(cookies=http.cookies, timeout=30) as fresh:
                codes.append(code_of(silent(fresh, base), RP))
        tokens = []
        for code in codes:
            answer = redeem(base, code, RP, VENDOR)
            assert answer.status_code == 200, answer.text
            tokens.append(answer.json()["access_token"])
        for code in codes[:4]:
            assert redeem(base, code, RP, VENDOR).status_code == 400
        assert [userinfo(base, t).status_code for t in tokens] == [401] * 4 + [200] * 7


def test_one_process_keeps_codes_and_sessions_across_a_restart(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "vendor-secret").write_text(SECRET + "\n")
    daemon = Daemon(tmp_path, sections(port)).start()  # the default: [throttle] state = sqlite
    try:
        base = url(port)
        with httpx.Client(timeout=30) as http:
            code = sign_in_across(http, base, base)
            pending = http.get(f"{base}/oidc/authorize?{FLOW.query(prompt='login')}")
            fields = form_fields(pending.text)
            daemon.stop()
            daemon.start()
            assert redeem(base, code, RP, VENDOR).status_code == 200
            assert code_of(silent(http, base), RP)  # the SSO session is still there
            # A sign-in form shown before the restart still works after it (request and CSRF).
            fields.update(barcode=DEMO["active"], pin=DEMO_PIN)
            assert code_of(http.post(f"{base}/oidc/login", data=fields), RP)
    finally:
        daemon.stop()


def test_provider_answers_503_while_redis_is_away(tmp_path: Path) -> None:
    """Nothing is issued or checked without the shared state; it works again when Redis is
    back, without a restart (this test's Redis keeps nothing, so the patron signs in again)."""
    from tests.state.redis_server import PrivateRedis

    port = free_port()
    (tmp_path / "vendor-secret").write_text(SECRET + "\n")
    with PrivateRedis(tmp_path) as server:
        state = f'\n[state]\nbackend = "redis"\nurl = "{server.url}"\n'
        with Daemon(tmp_path, sections(port) + state) as daemon:
            base = url(port)
            with httpx.Client(timeout=30) as http:
                code = sign_in_across(http, base, base)
                server.stop()
                assert redeem(base, code, RP, VENDOR).status_code == 503
                down = http.get(f"{base}/oidc/authorize?{FLOW.query()}")
                assert down.status_code == 503 and down.headers["retry-after"]
                server.start()
                assert within(20, lambda: silent(http, base).status_code != 503)
                assert error_of(silent(http, base)) == "login_required"
                assert sign_in_across(http, base, base)
        logs = daemon.logs()
        assert "oidc_state_unavailable" in logs  # the token endpoint
        assert "portal_sessions_unavailable" in logs  # the SSO session read before a page
