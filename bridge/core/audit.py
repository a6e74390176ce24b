"""The audit event: one JSON line per authentication decision (and per PIN life event).

Fields: time, protocol, client, source, realm (802.1X only), barcode (masked, full or keyed
hash per config), outcome, reason, latency. Never a PIN, hash, pepper or secret: the event is
built from named fields only. Lines go through the one logging setup (`bridge.logs`), whose
queue keeps disk writes off the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import structlog

from bridge import logs
from bridge.core.patron import Context, Decision, Outcome

BarcodeMode = Literal["masked", "full", "hash"]

#: Distinct (who, card, outcome, reason) audit fragments kept ready-encoded; cleared when full.
FRAGMENTS = 10_000

#: Longest barcode the audit shows (as the core accepts: `bridge.core.auth.MAX_BARCODE`).
BARCODE_SHOWN = 64
#: Longest client, source or reason text an audit line carries before it is cut.
FIELD_SHOWN = 128

#: SIP2's secret field codes (PIN, terminal password, login password) inside a barcode: a
#: mangled message with a lost `|` glues the PIN to the barcode (`AA1234AD5961`), and the
#: masked form's last four characters would then be the PIN's.
_GLUED_SECRET = re.compile(r"A[CD]|CO")


def malformed(value: str) -> str:
    """What the audit writes instead of a value it will not show: its size only."""
    return f"(malformed, {len(value.encode('utf-8', 'replace'))} bytes)"


def showable_barcode(barcode: str) -> bool:
    """Whether a barcode may appear in a line (masked, full or hashed): one the core could
    accept, with no secret glued into it. Anything else is hostile or broken input, logged as
    its size only, so no part of it (a PIN, 200 KB of padding) reaches the log."""
    return (
        0 < len(barcode) <= BARCODE_SHOWN
        and barcode.isascii()
        and barcode.isprintable()
        and " " not in barcode
        and _GLUED_SECRET.search(barcode) is None
    )


class Audit:
    def __init__(self, barcode_mode: BarcodeMode = "masked", hash_key: bytes = b"") -> None:
        self.barcode_mode: BarcodeMode = barcode_mode
        self._hash_key = hash_key
        # Audit lines are records, not diagnostics: `[log] level = "warning"` must not drop them,
        # so this logger filters at INFO whatever the configured level (processors, factory and
        # queue stay the global ones).
        self._log = structlog.wrap_logger(
            None,
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory_args=("audit",),
        ).bind(kind="audit")
        self._fragments: dict[tuple[str, str, str, str, str, str, str], str] = {}
        # barcode -> (context, decision, fragment) of its last line, for `decision`'s identity
        # check; only barcodes whose fragment is kept, bounded like it
        self._last: dict[str, tuple[Context, Decision, str]] = {}
        # (event, source, client) -> encoded fields, for `client_event`
        self._client_events: dict[tuple[str, str, str], str] = {}
        # Called with (ctx, decision, latency, path) for every decision: the metrics recorder's
        # one hook (path: "cached" when answered before the store, "store" otherwise).
        self.observe: Callable[[Context, Decision, float, str], None] | None = None
        # Called with every decision (e.g. the staff desk's per-card history): each must be
        # O(1) and never block (append to a queue; the writing happens elsewhere).
        self.taps: list[Callable[[str, Context, Decision], None]] = []

    def barcode(self, barcode: str) -> str:
        if not showable_barcode(barcode):
            return malformed(barcode)
        if self.barcode_mode == "full":
            return barcode
        if self.barcode_mode == "hash":
            return hmac.new(self._hash_key, barcode.encode(), hashlib.sha256).hexdigest()[:16]
        keep = 4 if len(barcode) > 6 else 0
        return "*" * (len(barcode) - keep) + barcode[len(barcode) - keep :]

    def decision(
        self, barcode: str, ctx: Context, decision: Decision, latency: float, path: str = "cached"
    ) -> None:
        """One line per authentication on every protocol, so its cost is per request: the
        fields other than time and latency repeat (the same terminal asks about the same card),
        so they are JSON-encoded once and the line is assembled around them. The fields are
        fixed and never secret, which is why this line may skip structlog's processor chain.

        Only well-formed questions are remembered: a line about bad input (a 200 KB DN, a
        garbled barcode) is built, written and forgotten, so hostile values cannot fill the
        table, and every field is bounded before it is encoded."""
        if self.observe is not None:
            self.observe(ctx, decision, latency, path)
        for tap in self.taps:
            tap(barcode, ctx, decision)
        # The same terminal asking about the same card again hands in the very same (frozen)
        # context and decision objects (front ends keep one context per client, the core one
        # decision per cached verification): then two identity checks find the fragment,
        # without building and hashing the 7-field key.
        last = self._last.get(barcode)
        if last is not None and last[0] is ctx and last[1] is decision:
            members = last[2]
        else:
            key = (
                ctx.protocol,
                ctx.client,
                ctx.source,
                ctx.realm,
                barcode,
                decision.outcome._value_,  # an Enum member's hash runs Python code, its value not
                decision.reason,
            )
            found = self._fragments.get(key)
            if found is None:
                members = self._members(barcode, ctx, decision)
                if decision.outcome is not Outcome.BAD_INPUT and showable_barcode(barcode):
                    if len(self._fragments) >= FRAGMENTS:
                        self._fragments.clear()
                        self._last.clear()
                    self._fragments[key] = members
                    self._last[barcode] = (ctx, decision, members)
            else:  # a kept fragment: its barcode's is (never more entries than fragments)
                members = found
                self._last[barcode] = (ctx, decision, members)
        if not logs.emit_members("auth", members, latency * 1000):
            fields = msgspec.json.decode(f"{{{members}}}")
            del fields["kind"]  # bound on this logger already
            self._log.info("auth", **fields, latency_ms=round(latency * 1000, 3))

    def _members(self, barcode: str, ctx: Context, decision: Decision) -> str:
        fields = {
            "kind": "audit",
            "protocol": ctx.protocol,
            "client": logs.clip(ctx.client, FIELD_SHOWN),
            "source": logs.clip(ctx.source, FIELD_SHOWN),
            "barcode": self.barcode(barcode),
            "outcome": decision.outcome.value,
            "reason": logs.clip(decision.reason, FIELD_SHOWN),
        }
        if ctx.realm:  # 802.1X outer identity's realm, already reduced to a domain name
            fields["realm"] = logs.clip(ctx.realm, FIELD_SHOWN)
        return msgspec.json.encode(fields).decode("utf-8")[1:-1]

    def client_event(self, event: str, *, source: str, client: str) -> None:
        """`event(event, source=source, client=client)` for a line written per connection with
        the same fields again and again (a SIP2 terminal's login, from its address, with its
        configured login): the fields are encoded once per (event, source, client), bounded
        like the decision fragments. Short values only (an address, a configured name)."""
        key = (event, source, client)
        members = self._client_events.get(key)
        if members is None:
            members = logs.audit_members({"source": source, "client": client})
            if len(self._client_events) >= FRAGMENTS:
                self._client_events.clear()
            self._client_events[key] = members
        if not logs.emit_audit_members(event, "info", members):
            self.event(event, source=source, client=client)

    def event(
        self,
        event: str,
        *,
        barcode: str | None = None,
        severity: Literal["info", "warning"] = "info",
        **fields: Any,
    ) -> None:
        """A PIN-life or admin event (pin_changed, reset_requested, patron_blocked, ...).
        `severity="warning"` for refusals an operator should notice (a terminal whose SIP
        login fails). Text fields are bounded by the logging setup (`logs.clip`)."""
        if barcode is not None:
            fields["barcode"] = self.barcode(barcode)
        if logs.emit_audit(event, severity, fields):
            return
        if severity == "warning":
            self._log.warning(event, **fields)
        else:
            self._log.info(event, **fields)
