"""Serve a vendor double in its own process (for the benchmark and for trying a connector):
`python -m tests.plugins.ils_http.run_double KIND` with KIND one of koha, folio, sierra,
polaris, alma, symphony, evergreen. Prints one JSON ready line with the port and the credentials the
connector needs, then serves until killed. `GET /_double/stats` (not part of any vendor's API)
answers the TCP connections and requests the double has seen."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.pins import DEMO_PIN
from tests.plugins.ils_http.alma_double import AlmaDouble, AlmaUser
from tests.plugins.ils_http.evergreen_double import EgPatron, EvergreenDouble
from tests.plugins.ils_http.folio_double import TENANT, FolioDouble, FolioUser
from tests.plugins.ils_http.koha_double import KohaDouble, KohaPatron
from tests.plugins.ils_http.polaris_double import PREFIX as POLARIS_PREFIX
from tests.plugins.ils_http.polaris_double import PolarisDouble, PolarisPatron
from tests.plugins.ils_http.serve import Served
from tests.plugins.ils_http.sierra_double import PREFIX, SierraDouble, SierraPatron
from tests.plugins.ils_http.symphony_double import SymphonyDouble, SymphonyPatron

BENCH_CARD = "21234000000001"  # bench/upstream.py's card


def main(kind: str) -> None:
    double: Any
    if kind == "koha":
        double = KohaDouble()
        double.add(KohaPatron(777, BENCH_CARD, "Bench", "Bea", DEMO_PIN))
        ready = {"client_id": double.client_id, "client_secret": double.client_secret}
    elif kind == "folio":
        double = FolioDouble()
        double.add(FolioUser(str(uuid.uuid4()), BENCH_CARD, "Bench", "Bea", DEMO_PIN))
        ready = {"tenant": TENANT, "username": double.username, "password": double.password}
    elif kind == "sierra":
        double = SierraDouble()
        double.add(SierraPatron(777, BENCH_CARD, "Bench, Bea", DEMO_PIN))
        ready = {"prefix": PREFIX, "key": double.key, "secret": double.secret}
    elif kind == "polaris":
        double = PolarisDouble()
        double.add(PolarisPatron(777, BENCH_CARD, "Bench", "Bea", DEMO_PIN))
        ready = {
            "prefix": POLARIS_PREFIX,
            "access_id": double.access_id,
            "key": double.key,
            "staff_domain": double.staff_domain,
            "staff_user": double.staff_user,
            "staff_password": double.staff_password,
        }
    elif kind == "alma":
        double = AlmaDouble()
        double.add(AlmaUser("bench@example.edu", BENCH_CARD, "Bench", "Bea", DEMO_PIN))
        ready = {"key": double.key}
    elif kind == "symphony":
        double = SymphonyDouble()
        double.add(SymphonyPatron("777", BENCH_CARD, "Bench", "Bea", DEMO_PIN))
        ready = {
            "client_id": double.client_id,
            "user": double.staff_user,
            "password": double.staff_password,
        }
    elif kind == "evergreen":
        double = EvergreenDouble()
        double.add(EgPatron(777, BENCH_CARD, "bench", "Bench", "Bea", DEMO_PIN))
        ready = {"user": double.staff_user, "password": double.staff_password}
    else:
        raise SystemExit(f"no double named {kind!r}")
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
    print(json.dumps({"event": "ready", "port": served.port, **ready}), flush=True)
    threading.Event().wait()


class _Bounded(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        """Drop it."""


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "koha")
