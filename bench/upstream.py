"""Upstream ILS benchmark: what the bridge adds in front of an ILS's SIP2 server, and what its
connection pool saves.

The ILS is pysip2's SIP2 server (from PyPI; `tests/plugins/sip2/pysip2_ils.py`), an in-memory
patron table, so its own cost per 63 is small and steady. Three rows, each with CONNECTIONS
clients sending 63 with a PIN one after another on persistent connections:

1. direct: the clients talk to the ILS itself (the baseline);
2. bridge, pooled: the clients talk to the bridge daemon (`[store] plugin = "sip2"`, pool of 4
   logged-in connections), which asks the ILS for every check (`[cache] ttl = 0`, so the
   verified-credential cache does not hide the ILS);
3. bridge, a connection per login: the same with `persistent = false` (connect, 93, 63,
   close for every check: what NYPL/Palace-style clients do to an ILS).

Added latency = the bridge row's p50 minus the direct p50. The CPU column is the server the
clients talk to (the ILS for row 1, the bridge for rows 2-3); the ILS's CPU per login in rows
2-3 is in the notes. Bounded by LOGINS and SECONDS per row; loopback only.

    python -m bench upstream
    BENCH_UPSTREAM_HTTP=evergreen,koha python -m bench upstream   # only those HTTP rows
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import CpuMeter, Result, percentile, pin_to_core, report
from bridge.sip2.codec import checksum

BARCODE = "21234000000001"
PIN = "5961"  # the demo patrons' PIN (tests/pins.py DEMO_PIN); never printed
LOGINS = int(os.environ.get("BENCH_UPSTREAM_LOGINS", "8000"))
SECONDS = float(os.environ.get("BENCH_UPSTREAM_SECONDS", "8"))
CONNECTIONS = 4
ROOT = Path(__file__).resolve().parent.parent


def _frame(body: str, sequence: int) -> bytes:
    data = f"{body}AY{sequence}AZ".encode()
    return data + checksum(data).encode() + b"\r"


def _patron(institution: str, sequence: int) -> bytes:
    date = time.strftime("%Y%m%d    %H%M%S")
    return _frame(f"63001{date}          AO{institution}|AA{BARCODE}|AC|AD{PIN}|", sequence)


async def _client(
    address: tuple[str, int], login: bytes, institution: str, count: int, deadline: float
) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(login)
    if not (await reader.readuntil(b"\r")).startswith(b"941"):
        raise RuntimeError("bench login refused")
    frames = [_patron(institution, s) for s in range(10)]
    latencies: list[float] = []
    for i in range(count):
        started = time.perf_counter()
        writer.write(frames[(i + 1) % 10])
        reply = await reader.readuntil(b"\r")
        latencies.append(time.perf_counter() - started)
        if b"|CQY|" not in reply:
            raise RuntimeError("bench 63 not accepted")
        if started > deadline:
            break
    writer.close()
    return latencies


def _measure(
    name: str,
    server: str,
    address: tuple[str, int],
    login: bytes,
    institution: str,
    pids: list[int],
) -> tuple[Result, float]:
    """Run the clients; return the result (CPU of pids[0]) and pids[1]'s CPU (the ILS)."""

    async def run() -> tuple[list[float], float, float, float]:
        deadline = time.perf_counter() + SECONDS
        await _client(address, login, institution, 5, deadline)  # warm up (connections, pool)
        meters = [CpuMeter(pid) for pid in pids]
        for meter in meters:
            meter.__enter__()
        runs = await asyncio.gather(
            *(
                _client(address, login, institution, LOGINS // CONNECTIONS, deadline)
                for _ in range(CONNECTIONS)
            )
        )
        for meter in meters:
            meter.__exit__()
        latencies = [x for r in runs for x in r]
        other = meters[1].seconds if len(meters) > 1 else 0.0
        return latencies, meters[0].wall, meters[0].seconds, other

    latencies, wall, cpu, other = asyncio.run(run())
    return Result(name, server, len(latencies), wall, latencies, cpu), other


def _start_ils() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.plugins.sip2.pysip2_ils", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    event = json.loads(proc.stdout.readline())
    return proc, int(event["port"])


FRONT = """
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "bench"
password = "bench-secret-1"
institution = "MAIN"

[cache]
ttl = 0
"""


def _store(port: int, persistent: bool) -> str:
    from tests.plugins.sip2 import pysip2_ils

    return f"""
[store]
plugin = "sip2"
host = "127.0.0.1"
port = {port}
login = "{pysip2_ils.ILS_LOGIN}"
password = "{pysip2_ils.ILS_PASSWORD}"
institution = "{pysip2_ils.INSTITUTION}"
pool_size = 4
persistent = {"true" if persistent else "false"}
"""


def main() -> None:
    only = os.environ.get("BENCH_UPSTREAM_HTTP")
    if only:
        http_rows(tuple(k for k in only.split(",") if k) if only != "all" else HTTP_DOUBLES)
        return
    from tests.harness import Daemon
    from tests.plugins.sip2 import pysip2_ils

    cores = os.cpu_count() or 1
    ils, port = _start_ils()
    results: list[Result] = []
    notes: list[str] = []
    try:
        if cores > 1:
            pin_to_core(ils.pid, 0)
        ils_login = _frame(f"9300CN{pysip2_ils.ILS_LOGIN}|CO{pysip2_ils.ILS_PASSWORD}|CPbench|", 0)
        direct, _ = _measure(
            "direct to the ILS",
            "pysip2",
            ("127.0.0.1", port),
            ils_login,
            pysip2_ils.INSTITUTION,
            [ils.pid],
        )
        results.append(direct)
        bridge_login = _frame("9300CNbench|CObench-secret-1|CPbench|", 0)
        for persistent, name in (
            (True, "bridge, pool of 4"),
            (False, "bridge, connection per login"),
        ):
            with tempfile.TemporaryDirectory(prefix="bench-upstream-") as tmp:
                daemon = Daemon(Path(tmp), FRONT, store=_store(port, persistent)).start()
                try:
                    assert daemon.proc is not None
                    if cores > 2:
                        pin_to_core(daemon.proc.pid, 1)
                    result, ils_cpu = _measure(
                        name,
                        "patron-bridge",
                        daemon.address("sip2"),
                        bridge_login,
                        "MAIN",
                        [daemon.proc.pid, ils.pid],
                    )
                finally:
                    daemon.stop()
            results.append(result)
            added = (percentile(result.latencies, 50) - percentile(direct.latencies, 50)) * 1e3
            per = ils_cpu / result.requests * 1e6 if result.requests else float("nan")
            notes.append(
                f"{name}: adds {added:.3f} ms at p50; ILS CPU {per:.0f} us per login "
                f"(direct: {direct.cpu_per_request_us:.0f} us)"
            )
    finally:
        ils.kill()
        ils.wait()
    report(
        "Upstream ILS over SIP2 (63 with a PIN, every check asks the ILS)",
        results,
        [
            *notes,
            f"{CONNECTIONS} clients, persistent connections to whichever server they talk to",
            "the ILS is pysip2's server (PyPI) with an in-memory patron table, loopback",
        ],
    )
    http_rows()


# -- HTTP ILS connectors -------------------------------------------------------------------------
# One row per connector against its test double (a separate process, loopback): the direct
# row calls the double's PIN check itself over a keep-alive httpx client, as the connector
# does; the bridge row sends SIP2 63s to the daemon, whose store asks the double. The notes say
# how many TCP connections the double saw per login after warm-up (goal: 0, all reused).

HTTP_DOUBLES = ("koha", "folio", "sierra", "polaris", "alma", "symphony", "evergreen")


def _start_double(kind: str) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.plugins.ils_http.run_double", kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def _double_stats(port: int) -> dict[str, int]:
    import httpx

    got: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/_double/stats").json()
    return got


def _nodelay_client(port: int) -> Any:
    import httpx

    nodelay = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", transport=nodelay)


async def _timed(count: int, login: Callable[[], Awaitable[bool]]) -> list[float]:
    """`count` logins one after another; each one's wall time. `login` says if the PIN passed."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        ok = await login()
        latencies.append(time.perf_counter() - started)
        if not ok:
            raise RuntimeError("bench: direct PIN check refused")
    return latencies


async def _direct_koha(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What koha-rest sends per login once its token and record cache are warm: one check."""
    async with _nodelay_client(port) as client:
        form = {
            "grant_type": "client_credentials",
            "client_id": str(ready["client_id"]),
            "client_secret": str(ready["client_secret"]),
        }
        token = (await client.post("/api/v1/oauth/token", data=form)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        body = {"identifier": BARCODE, "password": PIN}

        async def login() -> bool:
            reply = await client.post(
                "/api/v1/auth/password/validation", json=body, headers=headers
            )
            return bool(reply.status_code == 201)

        return await _timed(count, login)


async def _direct_folio(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What folio sends per login once its user and record caches are warm: the patron PIN
    check (the user lookup, made once, is what the connector keeps after a good PIN)."""
    async with _nodelay_client(port) as client:
        tenant = {"X-Okapi-Tenant": str(ready["tenant"])}
        creds = {"username": str(ready["username"]), "password": str(ready["password"])}
        answer = await client.post("/authn/login-with-expiry", json=creds, headers=tenant)
        headers = {**tenant, "X-Okapi-Token": answer.cookies["folioAccessToken"]}
        client.cookies.clear()
        query = {"query": f'barcode=="{BARCODE}"', "limit": "20"}
        users = (await client.get("/users", params=query, headers=headers)).json()["users"]
        pin = {"id": users[0]["id"], "pin": PIN}

        async def login() -> bool:
            reply = await client.post("/patron-pin/verify", json=pin, headers=headers)
            return bool(reply.status_code == 200)

        return await _timed(count, login)


async def _direct_sierra(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What sierra sends per login once its token and record cache are warm: one validate."""
    import httpx

    async with _nodelay_client(port) as client:
        prefix = str(ready["prefix"])
        basic = httpx.BasicAuth(str(ready["key"]), str(ready["secret"]))
        form = {"grant_type": "client_credentials"}
        answer = await client.post(f"{prefix}/v6/token", data=form, auth=basic)
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        body = {"barcode": BARCODE, "pin": PIN, "caseSensitivity": False}

        async def login() -> bool:
            reply = await client.post(f"{prefix}/v6/patrons/validate", json=body, headers=headers)
            return bool(reply.status_code == 204)

        return await _timed(count, login)


async def _direct_polaris(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What polaris sends per login once its record cache is warm: one signed authentication."""
    from plugins.polaris import http_date, signature

    async with _nodelay_client(port) as client:
        path = f"{ready['prefix']}/public/v1/1033/100/1/authenticator/patron"
        url = f"http://127.0.0.1:{port}{path}"
        body = {"Barcode": BARCODE, "Password": PIN}

        async def login() -> bool:
            date = http_date(time.time())
            mac = signature(str(ready["key"]), "POST", url, date)
            headers = {"PolarisDate": date, "Authorization": f"PWS {ready['access_id']}:{mac}"}
            reply = await client.post(path, json=body, headers=headers)
            return bool(reply.status_code == 200 and reply.json()["PAPIErrorCode"] == 0)

        return await _timed(count, login)


async def _direct_alma(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What alma sends per login once its record cache is warm: one op=auth."""
    async with _nodelay_client(port) as client:
        headers = {"Authorization": f"apikey {ready['key']}", "Exl-User-Pw": PIN}
        params = {"user_id_type": "all_unique", "op": "auth", "format": "json"}

        async def login() -> bool:
            reply = await client.post(f"/almaws/v1/users/{BARCODE}", params=params, headers=headers)
            return bool(reply.status_code == 204)

        return await _timed(count, login)


async def _direct_symphony(port: int, ready: dict[str, object], count: int) -> list[float]:
    """What symphony sends per login once its record cache is warm: one authenticate."""
    async with _nodelay_client(port) as client:
        headers = {"x-sirs-clientID": str(ready["client_id"]), "SD-Originating-App-Id": "bench"}
        body = {"barcode": BARCODE, "password": PIN}

        async def login() -> bool:
            reply = await client.post("/user/patron/authenticate", json=body, headers=headers)
            return bool(reply.status_code == 200)

        return await _timed(count, login)


class _SessionEnds:
    """What evergreen-http does with a patron session after the login: queue it, and let one
    task end the queued sessions one after another (`EvergreenStore._end_sessions`), never
    awaited by a login. So the direct row offers the double the same work the same way as the
    bridge row: four logins back to back and at most one session end beside them. (Ending
    each session after the clock stops, on the login's own client, as this row did before,
    left each client idle for the end and so kept fewer logins in flight than the bridge row
    has: a lighter load, not the same one.) Here the ends have their own keep-alive
    connection; the connector's take one of its pool's four when one is free."""

    def __init__(self, port: int) -> None:
        self.client = _nodelay_client(port)
        self.tokens: collections.deque[str] = collections.deque()
        self.task: asyncio.Task[None] | None = None
        self.form = {"service": "open-ils.auth", "method": "open-ils.auth.session.delete"}

    def end(self, token: str) -> None:
        self.tokens.append(token)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.tokens:
                token = self.tokens.popleft()
                await self.client.post("/osrf-gateway-v1", data={**self.form, "param": token})
        finally:
            self.task = None

    async def drain(self) -> None:
        while self.task is not None:
            await asyncio.shield(self.task)

    async def aclose(self) -> None:
        await self.drain()
        await self.client.aclose()


async def _direct_evergreen(
    port: int, ready: dict[str, object], count: int, ends: _SessionEnds | None = None
) -> list[float]:
    """What evergreen-http sends per login once its IDL and record cache are warm: one
    open-ils.auth.login awaited, then the session's end handed to `ends` (one task for all
    clients, as in the connector), which the next login does not wait for."""
    own = ends is None
    ends = ends or _SessionEnds(port)
    try:
        async with _nodelay_client(port) as client:
            login_args = {"barcode": BARCODE, "password": PIN, "type": "opac", "agent": "bench"}
            form = {"service": "open-ils.auth", "method": "open-ils.auth.login"}

            async def login() -> bool:
                reply = await client.post(
                    "/osrf-gateway-v1", data={**form, "param": json.dumps(login_args)}
                )
                answer = reply.json()["payload"][0]
                if answer["textcode"] != "SUCCESS":
                    return False
                ends.end(json.dumps(answer["payload"]["authtoken"]))
                return True

            return await _timed(count, login)
    finally:
        if own:
            await ends.aclose()


# The bridge's [store] per double: plugin, URL suffix, and which ready-line values go where.
STORES: dict[str, tuple[str, str, dict[str, str]]] = {
    "koha": ("koha-rest", "", {"client_id": "client_id", "secret": "client_secret"}),
    "folio": ("folio", "", {"tenant": "tenant", "username": "username", "password": "password"}),
    "sierra": ("sierra", "prefix", {"key": "key", "secret": "secret"}),
    "polaris": ("polaris", "prefix", {"access_id": "access_id", "api_key": "key"}),
    "alma": ("alma", "", {"api_key": "key"}),
    "symphony": (
        "symphony",
        "",
        {"client_id": "client_id", "user": "user", "password": "password"},
    ),
    "evergreen": ("evergreen-http", "", {}),
}
DIRECT = {
    "koha": _direct_koha,
    "folio": _direct_folio,
    "sierra": _direct_sierra,
    "polaris": _direct_polaris,
    "alma": _direct_alma,
    "symphony": _direct_symphony,
    "evergreen": _direct_evergreen,
}


def _store_toml(kind: str, port: int, ready: dict[str, object]) -> str:
    plugin, suffix, keys = STORES[kind]
    lines = [
        "[store]",
        f'plugin = "{plugin}"',
        f'base_url = "http://127.0.0.1:{port}{ready[suffix] if suffix else ""}"',
        *(f'{key} = "{ready[field]}"' for key, field in keys.items()),
        "pool_size = 4",
    ]
    return "\n" + "\n".join(lines) + "\n"


async def _direct_run(
    kind: str, pid: int, port: int, ready: dict[str, object], count: int
) -> tuple[list[float], float, float]:
    direct = DIRECT[kind]
    await direct(port, ready, 5)
    if kind != "evergreen":
        with CpuMeter(pid) as meter:
            runs = await asyncio.gather(*(direct(port, ready, count) for _ in range(CONNECTIONS)))
        return [x for r in runs for x in r], meter.wall, meter.seconds
    ends = _SessionEnds(port)  # one for the clients together, as the connector has one
    try:
        with CpuMeter(pid) as meter:
            runs = await asyncio.gather(
                *(_direct_evergreen(port, ready, count, ends) for _ in range(CONNECTIONS))
            )
            await ends.drain()  # the double's CPU per login includes the session's end
    finally:
        await ends.aclose()
    return [x for r in runs for x in r], meter.wall, meter.seconds


async def _warm(address: tuple[str, int], login: bytes) -> None:
    """As many clients at once as the measured run, so the pool has grown before counting."""
    await asyncio.gather(*(_client(address, login, "MAIN", 20, 1e18) for _ in range(CONNECTIONS)))


def http_rows(kinds: tuple[str, ...] = HTTP_DOUBLES) -> None:
    from tests.harness import Daemon

    results: list[Result] = []
    notes: list[str] = []
    load_before = os.getloadavg()
    for kind in kinds:
        double, ready = _start_double(kind)
        port = int(str(ready["port"]))
        try:
            assert double.pid
            count = LOGINS // CONNECTIONS

            latencies, wall, cpu = asyncio.run(_direct_run(kind, double.pid, port, ready, count))
            direct = Result(
                f"{kind}: direct to the double", "double", len(latencies), wall, latencies, cpu
            )
            results.append(direct)
            with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
                plugin = STORES[kind][0]
                daemon = Daemon(Path(tmp), FRONT, store=_store_toml(kind, port, ready)).start()
                try:
                    assert daemon.proc is not None
                    login = _frame("9300CNbench|CObench-secret-1|CPbench|", 0)
                    # warm-up: the pool's connections and the token
                    asyncio.run(_warm(daemon.address("sip2"), login))
                    before = _double_stats(port)
                    result, _ = _measure(
                        f"{kind}: bridge (SIP2 63 → {plugin})",
                        "patron-bridge",
                        daemon.address("sip2"),
                        login,
                        "MAIN",
                        [daemon.proc.pid],
                    )
                    after = _double_stats(port)
                finally:
                    daemon.stop()
            results.append(result)
            added = (percentile(result.latencies, 50) - percentile(direct.latencies, 50)) * 1e3
            # minus 1: the second stats request is itself a new connection
            opened = after["connections"] - before["connections"] - 1
            logins = result.requests + 5  # _measure warms up with 5 more
            notes.append(
                f"{kind}: the bridge adds {added:.3f} ms at p50; TCP connections opened after "
                f"warm-up: {opened} for {logins} logins ({opened / logins:.4f} per login)"
            )
        finally:
            double.kill()
            double.wait()
    report(
        "Upstream ILS over HTTP (SIP2 63 with a PIN; the store asks the vendor double)",
        results,
        [
            *notes,
            "machine load average (1, 5, 15 min) before: "
            + ", ".join(f"{x:.2f}" for x in load_before)
            + "; after: "
            + ", ".join(f"{x:.2f}" for x in os.getloadavg())
            + f"; {os.cpu_count()} CPUs shared with other work",
            f"{CONNECTIONS} clients; [cache] ttl = 0 so every login reaches the double's PIN "
            "check; the connector's record cache (30 s) answers the status read",
            "doubles are ours, built from the vendors' published contracts, not a real ILS",
            *(
                [
                    "evergreen: both rows end each session as the connector does, one background "
                    "task for all clients, unawaited (a second request per login)"
                ]
                if "evergreen" in kinds
                else []
            ),
        ],
    )


if __name__ == "__main__":
    main()
