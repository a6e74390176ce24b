"""Typed views of the SIP2 messages the bridge answers (and a SIP2 client sends).

Each class converts to and from the generic `codec.Message`, so a server parses with
`LoginRequest.from_message(decode(frame))` and a client builds with
`encode(PatronInformationRequest(...).to_message(), sequence=..., checksum=True)`.
PINs and passwords are `Secret` here: they leave the codec wrapped and are revealed only where
they are put back on the wire (`to_message`). Circulation messages stay generic `Message`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.secret import Secret
from bridge.sip2.codec import Message, ProtocolError, build

#: 14 positions, `Y` = privilege denied / condition true (spec order).
PATRON_STATUS_FLAGS = (
    "charge_denied",
    "renewal_denied",
    "recall_denied",
    "hold_denied",
    "card_lost",
    "too_many_charged",
    "too_many_overdue",
    "too_many_renewals",
    "too_many_claims_returned",
    "too_many_lost",
    "excessive_fines",
    "excessive_fees",
    "recall_overdue",
    "too_many_billed",
)

#: 63 summary position → the item-list field it asks for.
SUMMARY_TAGS = ("AS", "AT", "AU", "AV", "BU", "CD")


def _secret(message: Message, tag: str) -> Secret | None:
    """A secret field: None when absent, an empty Secret when present but empty."""
    for name, value in message.fields:
        if name == tag:
            return Secret(value)
    return None


def _reveal(secret: Secret | None) -> str:
    if secret is None:
        return ""
    return secret.reveal().decode("utf-8", errors="replace")


def _expect(message: Message, code: str) -> None:
    if message.code != code:
        raise ProtocolError(f"expected message {code}, got {message.code}")


# --- 93 / 94 ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginRequest:
    login: str
    password: Secret
    location: str = ""
    uid_algorithm: str = "0"
    pwd_algorithm: str = "0"  # noqa: S105 - an algorithm number, not a password

    @classmethod
    def from_message(cls, m: Message) -> LoginRequest:
        _expect(m, "93")
        return cls(
            login=m.get("CN"),
            password=_secret(m, "CO") or Secret(b""),
            location=m.get("CP"),
            uid_algorithm=m.fixed["uid_algorithm"],
            pwd_algorithm=m.fixed["pwd_algorithm"],
        )

    def to_message(self) -> Message:
        fields = [("CN", self.login), ("CO", _reveal(self.password))]
        if self.location:
            fields.append(("CP", self.location))
        return build(
            "93", {"uid_algorithm": self.uid_algorithm, "pwd_algorithm": self.pwd_algorithm}, fields
        )


@dataclass(frozen=True, slots=True)
class LoginResponse:
    ok: bool

    @classmethod
    def from_message(cls, m: Message) -> LoginResponse:
        _expect(m, "94")
        return cls(m.fixed["ok"] == "1")

    def to_message(self) -> Message:
        return build("94", {"ok": "1" if self.ok else "0"})


# --- 99 / 98 ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScStatus:
    status_code: str = "0"
    max_print_width: str = "080"
    protocol_version: str = "2.00"

    @classmethod
    def from_message(cls, m: Message) -> ScStatus:
        _expect(m, "99")
        f = m.fixed
        return cls(f["status_code"], f["max_print_width"], f["protocol_version"])

    def to_message(self) -> Message:
        return build(
            "99",
            {
                "status_code": self.status_code,
                "max_print_width": self.max_print_width,
                "protocol_version": self.protocol_version,
            },
        )


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


@dataclass(frozen=True, slots=True)
class AcsStatus:
    online: bool
    date: str
    institution: str
    supported: str  # BX, 16 Y/N
    checkin_ok: bool = False
    checkout_ok: bool = False
    renewal_policy: bool = False
    status_update_ok: bool = False
    offline_ok: bool = False
    timeout_period: str = "000"
    retries_allowed: str = "000"
    protocol_version: str = "2.00"
    library_name: str = ""
    terminal_location: str = ""
    screen_message: str = ""

    @classmethod
    def from_message(cls, m: Message) -> AcsStatus:
        _expect(m, "98")
        f = m.fixed
        return cls(
            online=f["online_status"] == "Y",
            date=f["date_time_sync"],
            institution=m.get("AO"),
            supported=m.get("BX"),
            checkin_ok=f["checkin_ok"] == "Y",
            checkout_ok=f["checkout_ok"] == "Y",
            renewal_policy=f["acs_renewal_policy"] == "Y",
            status_update_ok=f["status_update_ok"] == "Y",
            offline_ok=f["offline_ok"] == "Y",
            timeout_period=f["timeout_period"],
            retries_allowed=f["retries_allowed"],
            protocol_version=f["protocol_version"],
            library_name=m.get("AM"),
            terminal_location=m.get("AN"),
            screen_message=m.get("AF"),
        )

    def to_message(self) -> Message:
        fields = [("AO", self.institution)]
        if self.library_name:
            fields.append(("AM", self.library_name))
        fields.append(("BX", self.supported))
        if self.terminal_location:
            fields.append(("AN", self.terminal_location))
        if self.screen_message:
            fields.append(("AF", self.screen_message))
        return build(
            "98",
            {
                "online_status": _yn(self.online),
                "checkin_ok": _yn(self.checkin_ok),
                "checkout_ok": _yn(self.checkout_ok),
                "acs_renewal_policy": _yn(self.renewal_policy),
                "status_update_ok": _yn(self.status_update_ok),
                "offline_ok": _yn(self.offline_ok),
                "timeout_period": self.timeout_period,
                "retries_allowed": self.retries_allowed,
                "date_time_sync": self.date,
                "protocol_version": self.protocol_version,
            },
            fields,
        )


# --- 23 / 63 requests ------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: built for every PIN check, and frozen init is slow
class PatronRequest:
    """23 (patron status) or 63 (patron information): the PIN check every vendor sends.

    `pin` is None when AD is absent and an empty `Secret` when it is present but empty.
    `summary` (63 only) is the 10-character item-list selector.
    """

    code: str  # "23" or "63"
    barcode: str
    pin: Secret | None
    institution: str = ""
    terminal_password: Secret | None = None
    language: str = "000"
    date: str = ""
    summary: str = "          "
    start_item: str = ""
    end_item: str = ""

    @classmethod
    def from_message(cls, m: Message) -> PatronRequest:
        if m.code not in ("23", "63"):
            raise ProtocolError(f"expected message 23 or 63, got {m.code}")
        # The first value of each tag (later duplicates are ignored), in one C-level pass:
        # this runs for every PIN check.
        first = dict(reversed(m.fields))
        f = m.fixed
        pin = first.get("AD")
        terminal = first.get("AC")
        return cls(  # positional, in field order: cheaper than keywords on this path
            m.code,
            first.get("AA", ""),
            None if pin is None else Secret(pin),
            first.get("AO", ""),
            None if terminal is None else Secret(terminal),
            f["language"],
            f["transaction_date"],
            f.get("summary", "          "),
            first.get("BP", ""),
            first.get("BQ", ""),
        )

    @property
    def summary_tag(self) -> str | None:
        """The item list a 63 asks for (first `Y` in positions 0-5), or None."""
        for i, tag in enumerate(SUMMARY_TAGS):
            if self.summary[i : i + 1] == "Y":
                return tag
        return None

    def to_message(self) -> Message:
        fixed = {"language": self.language, "transaction_date": self.date}
        if self.code == "63":
            fixed["summary"] = self.summary
        fields = [("AO", self.institution), ("AA", self.barcode)]
        fields.append(("AC", _reveal(self.terminal_password)))
        if self.pin is not None:
            fields.append(("AD", _reveal(self.pin)))
        if self.code == "63":
            if self.start_item:
                fields.append(("BP", self.start_item))
            if self.end_item:
                fields.append(("BQ", self.end_item))
        return build(self.code, fixed, fields)


# --- 24 / 64 responses -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatronResponse:
    """24 (patron status) or 64 (patron information) response.

    `valid_patron` / `valid_pin` are BL / CQ; None leaves the field out (the bridge never does
    for CQ; a client reading another server may meet its absence). `counts` are the six 64
    counts (hold, overdue, charged, fine, recall, unavailable holds); `items` the item-list
    fields asked for by the summary.
    """

    code: str  # "24" or "64"
    patron_status: str
    date: str
    institution: str
    barcode: str
    name: str = ""
    valid_patron: bool | None = None
    valid_pin: bool | None = None
    language: str = "000"
    currency: str = ""
    fees: str = ""
    fee_limit: str = ""
    hold_limit: str = ""
    overdue_limit: str = ""
    charged_limit: str = ""
    email: str = ""
    expires: str = ""  # PA, YYYYMMDD
    category: str = ""  # PC
    screen_messages: tuple[str, ...] = ()
    counts: tuple[str, str, str, str, str, str] = ("0000",) * 6
    items: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_message(cls, m: Message) -> PatronResponse:
        if m.code not in ("24", "64"):
            raise ProtocolError(f"expected message 24 or 64, got {m.code}")
        f = m.fixed
        bl, cq = m.get("BL", "?")[:1], m.get("CQ", "?")[:1]
        counts = ("0000",) * 6
        if m.code == "64":
            counts = (
                f["hold_items_count"],
                f["overdue_items_count"],
                f["charged_items_count"],
                f["fine_items_count"],
                f["recall_items_count"],
                f["unavailable_holds_count"],
            )
        return cls(
            code=m.code,
            patron_status=f["patron_status"],
            date=f["transaction_date"],
            institution=m.get("AO"),
            barcode=m.get("AA"),
            name=m.get("AE"),
            valid_patron=None if bl not in ("Y", "N") else bl == "Y",
            valid_pin=None if cq not in ("Y", "N") else cq == "Y",
            language=f["language"],
            currency=m.get("BH"),
            fees=m.get("BV"),
            fee_limit=m.get("CC"),
            hold_limit=m.get("BZ"),
            overdue_limit=m.get("CA"),
            charged_limit=m.get("CB"),
            email=m.get("BE"),
            expires=m.get("PA"),
            category=m.get("PC"),
            screen_messages=tuple(m.get_all("AF")),
            counts=counts,
            items=tuple((t, v) for t, v in m.fields if t in SUMMARY_TAGS),
        )

    def to_message(self) -> Message:
        fixed = {
            "patron_status": self.patron_status,
            "language": self.language,
            "transaction_date": self.date,
        }
        if self.code == "64":
            names = (
                "hold_items_count",
                "overdue_items_count",
                "charged_items_count",
                "fine_items_count",
                "recall_items_count",
                "unavailable_holds_count",
            )
            fixed.update(zip(names, self.counts, strict=True))
        fields = [("AO", self.institution), ("AA", self.barcode), ("AE", self.name)]
        if self.code == "64":
            for tag, value in (
                ("BZ", self.hold_limit),
                ("CA", self.overdue_limit),
                ("CB", self.charged_limit),
            ):
                if value:
                    fields.append((tag, value))
        if self.valid_patron is not None:
            fields.append(("BL", _yn(self.valid_patron)))
        if self.valid_pin is not None:
            fields.append(("CQ", _yn(self.valid_pin)))
        if self.currency:
            fields.append(("BH", self.currency))
        if self.fees:
            fields.append(("BV", self.fees))
        if self.code == "64" and self.fee_limit:
            fields.append(("CC", self.fee_limit))
        fields.extend(self.items)
        if self.email:
            fields.append(("BE", self.email))
        if self.expires:
            fields.append(("PA", self.expires))
        if self.category:
            fields.append(("PC", self.category))
        fields.extend(("AF", text) for text in self.screen_messages)
        return Message(self.code, fixed, fields)  # every fixed name is set above


# --- 35 / 36, 01 -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndSession:
    barcode: str
    institution: str = ""
    date: str = ""

    @classmethod
    def from_message(cls, m: Message) -> EndSession:
        _expect(m, "35")
        return cls(m.get("AA"), m.get("AO"), m.fixed["transaction_date"])

    def to_message(self) -> Message:
        return build(
            "35", {"transaction_date": self.date}, [("AO", self.institution), ("AA", self.barcode)]
        )


@dataclass(frozen=True, slots=True)
class EndSessionResponse:
    ended: bool
    date: str
    institution: str
    barcode: str
    screen_message: str = ""

    @classmethod
    def from_message(cls, m: Message) -> EndSessionResponse:
        _expect(m, "36")
        f = m.fixed
        return cls(f["end_session"] == "Y", f["transaction_date"], m.get("AO"), m.get("AA"))

    def to_message(self) -> Message:
        fields = [("AO", self.institution), ("AA", self.barcode)]
        if self.screen_message:
            fields.append(("AF", self.screen_message))
        return build("36", {"end_session": _yn(self.ended), "transaction_date": self.date}, fields)


@dataclass(frozen=True, slots=True)
class BlockPatron:
    barcode: str
    message: str = ""  # AL: why the card is blocked
    card_retained: bool = False
    institution: str = ""
    date: str = ""

    @classmethod
    def from_message(cls, m: Message) -> BlockPatron:
        _expect(m, "01")
        return cls(
            barcode=m.get("AA"),
            message=m.get("AL"),
            card_retained=m.fixed["card_retained"] == "Y",
            institution=m.get("AO"),
            date=m.fixed["transaction_date"],
        )

    def to_message(self) -> Message:
        return build(
            "01",
            {"card_retained": _yn(self.card_retained), "transaction_date": self.date},
            [("AO", self.institution), ("AL", self.message), ("AA", self.barcode), ("AC", "")],
        )
