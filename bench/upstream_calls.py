"""Instructions per login in an HTTP ILS connector alone: the store opened as the daemon opens
it, calling its test double (a separate process, not measured) under `valgrind
--tool=callgrind`. The wall-time rows of `bench upstream` move with the machine's load; this
figure does not, so it ranks changes to the connector and its HTTP client.

Each connector runs twice, FEW then MANY logins one after another (after a warm-up that fills
the pool, the token and the record cache); (instructions of MANY - of FEW) / (MANY - FEW) is
what one more login costs in the connector's process (user space, all threads; the patron
session Evergreen ends in the background included, as the run waits for it).

    python -m bench.upstream_calls                  # every connector (a few minutes)
    python -m bench.upstream_calls folio evergreen  # those

Needs valgrind (bench only, no test uses it).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.upstream import BARCODE, HTTP_DOUBLES, PIN, ROOT, STORES, _start_double

FEW = 50
MANY = 550
WARM = 20


def _settings(kind: str, port: int, ready: dict[str, Any]) -> dict[str, Any]:
    _, suffix, keys = STORES[kind]
    return {
        "base_url": f"http://127.0.0.1:{port}{ready[suffix] if suffix else ''}",
        **{key: ready[field] for key, field in keys.items()},
        "pool_size": 4,
        "request_timeout": 600.0,  # valgrind is some 50 times slower than the real thing
        "connect_timeout": 600.0,
    }


async def _logins(kind: str, port: int, ready: dict[str, Any], count: int) -> None:
    """The child: WARM logins, then `count` more, then the background work drained."""
    import msgspec

    from bridge.core.secret import Secret
    from bridge.core.store import StoreServices, load_plugin

    plugin = load_plugin(STORES[kind][0])
    settings = msgspec.convert(_settings(kind, port, ready), plugin.settings, strict=False)
    store: Any = await plugin.open(settings, StoreServices(hasher=None, base_dir="."))
    pin = Secret(PIN)
    try:
        for _ in range(WARM + count):
            if not (await store.verify_pin(BARCODE, pin)).pin_ok:
                raise RuntimeError("bench: PIN refused")
        if hasattr(store, "ended"):
            await store.ended()
    finally:
        await store.aclose()


def instructions(kind: str, count: int, port: int, ready: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-calls-") as tmp:
        log = Path(tmp) / "valgrind.log"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/callgrind.out",
                f"--log-file={log}",
                sys.executable,
                "-m",
                "bench.upstream_calls",
                "--child",
                kind,
                str(count),
                str(port),
                json.dumps(ready),
            ],
            check=True,
            cwd=ROOT,
        )
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError("callgrind wrote no total")
        return int(found.group(1))


def main(kinds: list[str]) -> None:
    print("\n## instructions per login in the HTTP connector (callgrind, user space)")
    for kind in kinds or HTTP_DOUBLES:
        double, ready = _start_double(kind)
        try:
            port = int(str(ready["port"]))
            few, many = (instructions(kind, n, port, ready) for n in (FEW, MANY))
        finally:
            double.kill()
            double.wait()
        print(f"  {STORES[kind][0]:<15} {(many - few) / (MANY - FEW):>12,.0f}", flush=True)
    print(f"  ({MANY} - {FEW} logins one after another, after {WARM} to warm up)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        kind, count, port, ready = sys.argv[2:6]
        asyncio.run(_logins(kind, int(port), json.loads(ready), int(count)))
    else:
        main(sys.argv[1:])
