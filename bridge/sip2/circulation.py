"""The seam for circulation messages (11, 09, 17, 29, 37, 15, 19, 65, 25).

The bridge checks PINs; checkouts, checkins, holds, renewals, fees and item information belong
to the library's ILS. The server hands every circulation request to one `Circulation` object:

    class Circulation(Protocol):
        supported: frozenset[str]          # request codes it really answers (drives BX, 98 flags)
        async def handle(self, request: Message, ctx: CirculationContext) -> Message: ...

`handle` receives the decoded request (generic `codec.Message`; AC/AD stay in its fields, so an
implementation that forwards it must not log it) and returns the response message; the server
mirrors sequence and checksum and encodes it in the account's charset. It must always return a
well-formed response of the right type; `refusal()` builds one for any request.

Until an upstream ILS is configured, `RefuseCirculation` answers every circulation request with
that refusal (ok/accepted = 0 or N plus a screen message) and supports nothing, so the 98's BX
says `N` for each. An upstream forwarder (the SIP2 store plugin) plugs in by passing
`circulation=` to `bridge.sip2.server.start`, or by having the store object provide
`sip2_circulation() -> Circulation` (see `server.circulation_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridge.sip2.codec import RESPONSE_CODE, Message, ProtocolError, build

REFUSED = "Circulation is not available at this service point. Please ask staff."


@dataclass(frozen=True, slots=True)
class CirculationContext:
    """Who asks: the SIP login, our institution id, the source address, and the date text to
    put in the response's transaction-date field."""

    login: str
    institution: str
    source: str
    date: str


@runtime_checkable
class Circulation(Protocol):
    supported: frozenset[str]

    async def handle(self, request: Message, ctx: CirculationContext) -> Message: ...


@runtime_checkable
class CirculationProvider(Protocol):
    """A store that can also serve circulation (e.g. one that speaks SIP2 to an ILS)."""

    def sip2_circulation(self) -> Circulation: ...


class RefuseCirculation:
    """The default: nothing supported; every request gets its well-formed refusal."""

    supported: frozenset[str] = frozenset()

    async def handle(self, request: Message, ctx: CirculationContext) -> Message:
        return refusal(request, ctx.date, ctx.institution)


def refusal(request: Message, date: str, institution: str = "", text: str = REFUSED) -> Message:
    """A well-formed "no" of the right type for any circulation request."""
    code = RESPONSE_CODE.get(request.code, "")
    ao = institution or request.get("AO")
    aa = request.get("AA")
    ab = request.get("AB")
    aj = request.get("AJ")
    match code:
        case "12":  # checkout
            fixed = {"ok": "0", "renewal_ok": "N", "magnetic_media": "U", "desensitize": "N"}
            fields = [("AO", ao), ("AA", aa), ("AB", ab), ("AJ", aj), ("AH", "")]
        case "10":  # checkin
            fixed = {"ok": "0", "resensitize": "N", "magnetic_media": "U", "alert": "N"}
            fields = [("AO", ao), ("AB", ab), ("AQ", ""), ("AJ", aj)]
        case "18":  # item information
            fixed = {"circulation_status": "01", "security_marker": "00", "fee_type": "01"}
            fields = [("AB", ab), ("AJ", aj)]
        case "20":  # item status update
            fixed = {"item_properties_ok": "0"}
            fields = [("AB", ab), ("AJ", aj)]
        case "26":  # patron enable
            fixed = {"patron_status": "YYYY" + " " * 10, "language": "000"}
            fields = [("AO", ao), ("AA", aa), ("AE", "")]
        case "16":  # hold
            fixed = {"ok": "0", "available": "N"}
            fields = [("AO", ao), ("AA", aa)]
        case "30":  # renew
            fixed = {"ok": "0", "renewal_ok": "N", "magnetic_media": "U", "desensitize": "N"}
            fields = [("AO", ao), ("AA", aa), ("AB", ab), ("AJ", aj), ("AH", "")]
        case "38":  # fee paid
            fixed = {"payment_accepted": "N"}
            fields = [("AO", ao), ("AA", aa)]
        case "66":  # renew all
            fixed = {"ok": "0", "renewed_count": "0000", "unrenewed_count": "0000"}
            fields = [("AO", ao)]
        case _:
            raise ProtocolError(f"message {request.code} is not a circulation request")
    fixed["transaction_date"] = date
    fields.append(("AF", text))
    return build(code, fixed, fields)
