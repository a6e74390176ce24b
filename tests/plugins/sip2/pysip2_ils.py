"""A stand-in ILS built on a SIP2 server that is not ours: pysip2's `SIP2Server` (PyPI).

Run as `python -m tests.plugins.sip2.pysip2_ils PORT` (0 picks one). It prints one JSON line
`{"event": "ready", "port": N}` once it listens, and `{"event": "slow"}` when a patron check
for `SLOW_BARCODE` arrives (that check then never answers: the test's "ILS slow" and "ILS
killed mid-request"). Patrons mirror the bridge's demo patrons (conf/demo-patrons.csv) with
PIN `tests.pins.DEMO_PIN`; checkouts and checkins succeed for any item and say so.
It never logs a frame.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from pysip2 import (
    CHECKIN,
    CHECKOUT,
    LOGIN,
    PATRON_INFORMATION,
    CheckinRequest,
    CheckinResponse,
    CheckoutRequest,
    CheckoutResponse,
    LoginRequest,
    LoginResponse,
    PatronInformationRequest,
    PatronInformationResponse,
    SIP2Server,
)

from tests.pins import DEMO_PIN

ILS_LOGIN = "bridge"
ILS_PASSWORD = "ils-secret"
INSTITUTION = "ILS"
SLOW_BARCODE = "21234000000099"

#: barcode → (name, 14-char status, PA expiry, BV fees, email, PC category)
PATRONS: dict[str, tuple[str, str, str, str, str, str]] = {
    "21234000000001": ("Reader, Active", " " * 14, "20991231", "0.00", "a@example.org", "ADULT"),
    "21234000000002": ("Reader, Expired", " " * 14, "20200101", "0.00", "", "ADULT"),
    "21234000000003": ("Reader, Blocked", "Y   Y" + " " * 9, "20991231", "0.00", "", "ADULT"),
    "21234000000005": ("Reader, Fines", " " * 10 + "Y   ", "20991231", "25.50", "", "ADULT"),
}


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


app = SIP2Server(institution_id=INSTITUTION, login_required=True, error_detection="auto")


@app.route(LOGIN)
def login(req: LoginRequest, ctx: Any) -> LoginResponse:
    ok = req.login_user_id == ILS_LOGIN and req.login_password == ILS_PASSWORD
    return LoginResponse(ok="1" if ok else "0")


@app.route(PATRON_INFORMATION)
async def patron_information(req: PatronInformationRequest, ctx: Any) -> PatronInformationResponse:
    if req.patron_identifier == SLOW_BARCODE:
        say(event="slow")
        await anyio.sleep_forever()
    record = PATRONS.get(req.patron_identifier)
    base: dict[str, Any] = {
        "language": req.language,
        "transaction_date": ctx.now_18(),
        "hold_items_count": "0000",
        "overdue_items_count": "0000",
        "charged_items_count": "0000",
        "fine_items_count": "0000",
        "recall_items_count": "0000",
        "unavailable_holds_count": "0000",
        "institution_id": INSTITUTION,
        "patron_identifier": req.patron_identifier,
    }
    if record is None:
        return PatronInformationResponse(
            **base,
            patron_status="YYYY" + " " * 10,
            personal_name="",
            valid_patron="N",
            valid_patron_password="N",
        )
    name, status, expiry, fees, email, category = record
    pin_ok = req.patron_password == DEMO_PIN
    return PatronInformationResponse(
        **base,
        patron_status=status,
        personal_name=name,
        valid_patron="Y",
        valid_patron_password="Y" if pin_ok else "N",
        currency_type="USD",
        fee_amount=fees,
        email_address=email or None,
        # pysip2 has no PA/PC fields in its model: the expiry and class ride in AF/AG here,
        # and the connector must not mistake them for anything.
        screen_message=(f"expires {expiry}", f"class {category}"),
    )


@app.route(CHECKOUT)
def checkout(req: CheckoutRequest, ctx: Any) -> CheckoutResponse:
    return CheckoutResponse(
        ok="1",
        renewal_ok="N",
        magnetic_media="N",
        desensitize="Y",
        transaction_date=ctx.now_18(),
        institution_id=req.institution_id,
        patron_identifier=req.patron_identifier,
        item_identifier=req.item_identifier,
        title_identifier=f"Title of {req.item_identifier}",
        due_date="20991231    235900",
        screen_message=("Checked out by the ILS",),
    )


@app.route(CHECKIN)
def checkin(req: CheckinRequest, ctx: Any) -> CheckinResponse:
    return CheckinResponse(
        ok="1",
        resensitize="Y",
        magnetic_media="N",
        alert="N",
        transaction_date=ctx.now_18(),
        institution_id=req.institution_id,
        item_identifier=req.item_identifier,
        permanent_location="Main stacks",
        title_identifier=f"Title of {req.item_identifier}",
        screen_message=("Checked in by the ILS",),
    )


async def main(port: int) -> None:
    async with app.start("127.0.0.1", port) as bound:
        say(event="ready", port=bound)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
