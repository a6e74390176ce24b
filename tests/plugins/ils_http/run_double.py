"""Serve a vendor double in its own process (for the benchmark): `python -m
tests.plugins.ils_http.run_double koha`. Prints one JSON ready line with the port and the
client credentials, then serves until killed. `GET /_double/stats` (not part of any vendor's
API) answers the TCP connections and requests the double has seen."""

from __future__ import annotations

import json
import sys
import threading

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.pins import DEMO_PIN
from tests.plugins.ils_http.koha_double import KohaDouble, KohaPatron
from tests.plugins.ils_http.serve import Served


def main(kind: str) -> None:
    if kind != "koha":
        raise SystemExit(f"no double named {kind!r}")
    double = KohaDouble()
    double.add(KohaPatron(777, "21234000000001", "Bench", "Bea", DEMO_PIN))  # bench's card
    app = double.app()
    holder: list[Served] = []

    async def stats(request: Request) -> JSONResponse:
        counter = holder[0].counter
        return JSONResponse({"connections": counter.connections, "requests": counter.requests})

    app.router.routes.append(Route("/_double/stats", stats, methods=["GET"]))
    double.requests = _Bounded()  # the benchmark sends thousands; keep none
    double.responses = _Bounded()
    served = Served(app).start()
    holder.append(served)
    ready = {"event": "ready", "port": served.port, "client_id": double.client_id}
    ready["client_secret"] = double.client_secret
    print(json.dumps(ready), flush=True)
    threading.Event().wait()


class _Bounded(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        """Drop it."""


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "koha")
