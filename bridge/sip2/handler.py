"""Answers the requests a session dispatches, by asking the core: the only SIP2 code that
awaits anything besides the socket.

One method per request type; every PIN goes through `authenticator.authenticate`, lookups and
blocks through the authenticator too, and the wire answer comes from `answers` (pure). The 98's
online status is the store's health, cached for `health_cache_seconds` so a fleet of
self-checks sending 99 as a keep-alive does not hit the ILS on every one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bridge.core.auth import valid_barcode
from bridge.core.patron import BAD_INPUT, Context, Decision, Patron
from bridge.core.store import NotSupported, StoreError, StoreUnavailable
from bridge.services import Services
from bridge.sip2 import answers
from bridge.sip2.circulation import Circulation, CirculationContext, refusal
from bridge.sip2.codec import (
    CIRCULATION_CODES,
    Message,
    Prepared,
    Request,
    Template,
    render,
    sip_date,
    supported_messages,
    template,
)
from bridge.sip2.messages import BlockPatron, EndSession, PatronRequest
from bridge.sip2.session import Account, Session
from bridge.sip2.settings import Sip2Settings

log = structlog.get_logger("bridge.sip2")

#: Requests the bridge itself always answers.
OWN_CODES = frozenset({"23", "63", "99", "97", "93", "35"})
HEALTH_TIMEOUT = 3.0
#: Serialised answers kept for repeat checks of the same patron (bounded; cleared when full).
TEMPLATE_CACHE = 10_000


@dataclass(slots=True)
class _Kept:
    """A serialised 24/64 for one terminal question: the decision and day it was made for,
    and its text for the last transaction date it was rendered with."""

    decision: Decision
    today: dt.date
    template: Template
    date: str = ""
    answer: Prepared | None = None  # rendered for `date`; handed out as is (never changed)


def _asked(code: str, barcode: str, institution: str) -> PatronRequest:
    """The request as `answers` reads it: its code, card and institution (nothing else)."""
    return PatronRequest(code, barcode, None, institution)


class Handler:
    def __init__(
        self,
        settings: Sip2Settings,
        services: Services,
        circulation: Circulation,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.authenticator = services.authenticator
        self.audit = services.audit
        self.circulation = circulation
        self.clock = clock
        self.monotonic = monotonic
        codes = set(OWN_CODES) | (set(circulation.supported) & CIRCULATION_CODES)
        if self.authenticator.can_block:
            codes.add("01")
        self.codes = frozenset(codes)
        self.bx = supported_messages(self.codes)
        self._options: dict[str, answers.AnswerOptions] = {}
        self._health_until = 0.0
        self._online = True
        self._health_lock = asyncio.Lock()
        self._templates: dict[tuple[str, str, str, str], _Kept] = {}
        self._date_memo: tuple[int, str, dt.date] = (-1, "", dt.date.min)
        self._contexts: dict[tuple[str, str], Context] = {}

    # -- helpers ----------------------------------------------------------------------------
    def options(self, account: Account | None) -> answers.AnswerOptions:
        if account is None:
            return answers.AnswerOptions()
        found = self._options.get(account.login)
        if found is None:
            s = account.settings
            found = answers.AnswerOptions(
                institution=s.institution,
                currency=s.currency,
                wrong_pin_as_unknown=s.wrong_pin_as_unknown,
                policy_refusal_cqn=s.policy_refusal_cqn,
                hold_limit=s.hold_items_limit,
                overdue_limit=s.overdue_items_limit,
                charged_limit=s.charged_items_limit,
            )
            self._options[account.login] = found
        return found

    async def online(self) -> bool:
        """The store's health, reused for a few seconds; a hung store counts as down."""
        if self.monotonic() < self._health_until:
            return self._online
        async with self._health_lock:
            if self.monotonic() < self._health_until:
                return self._online
            try:
                async with asyncio.timeout(HEALTH_TIMEOUT):
                    health = await self.authenticator.health()
                self._online = health.ok
            except (TimeoutError, StoreError):
                self._online = False
            self._health_until = self.monotonic() + self.settings.health_cache_seconds
            return self._online

    # -- dispatch ---------------------------------------------------------------------------
    def answer_now(self, message: Message, session: Session) -> Message | Prepared | None:
        """The answer when it needs nothing awaited, else None (then `dispatch` in a task).

        What a busy self-check sends most, answered from the connection's callback: a 63/23
        whose PIN the core verified lately (`Authenticator.settle`), a keep-alive 99 while the
        store's health is fresh, a 35."""
        code = message.code
        if code == "63" or code == "23":
            return self.patron_now(message, session)
        if code == "99":
            if self.monotonic() < self._health_until:
                return self._status(session, self._online)
            return None
        if code == "35":
            return self.end_session(message, session)
        return None

    def answer_request(self, request: Request, session: Session) -> Prepared | None:
        """`answer_now` for a request read straight off its frame (`Session.request`): the
        same answers without a `Message`, a `PatronRequest` or a terminal-password `Secret`.
        None: ask `Session.receive` and `answer_now` (a PIN the core cannot settle now)."""
        code, _, _, institution, barcode, pin = request
        account = session.account
        assert account is not None  # `Session.request` reads only after login
        if code == "35":
            return self._ended(barcode, account.settings.institution or institution)
        if not pin:
            return None  # no PIN: a store lookup
        # `_context`, its lookup inline: every cached PIN check comes here
        ctx = self._contexts.get((account.login, session.source))
        if ctx is None:
            ctx = self._context(account, session)
        decision = self.authenticator.settle(barcode, pin, ctx)
        if decision is None:
            return None
        return self._answer(code, barcode, institution, account, decision)

    async def dispatch(self, message: Message, session: Session) -> Message | Prepared:
        code = message.code
        if code == "63" or code == "23":
            return await self.patron(message, session)
        if code == "99":
            return await self.status(session)
        if code == "35":
            return self.end_session(message, session)
        if code == "01":
            return await self.block(message, session)
        now = self.clock()
        account = session.account
        institution = account.settings.institution if account is not None else ""
        if code in self.circulation.supported:
            ctx = CirculationContext(
                login=account.login if account is not None else "",
                institution=institution,
                source=session.source,
                date=sip_date(now),
            )
            return await self.circulation.handle(message, ctx)
        # A circulation request the configured circulation does not support.
        return refusal(message, sip_date(now), institution)

    def _dates(self) -> tuple[str, dt.date]:
        """The SIP2 transaction date and today's date, worked out once a second."""
        now = self.clock()
        second = int(now)
        if second != self._date_memo[0]:
            self._date_memo = (second, sip_date(now), dt.date.fromtimestamp(now))
        return self._date_memo[1], self._date_memo[2]

    def _context(self, account: Account, session: Session) -> Context:
        ctx = self._contexts.get((account.login, session.source))
        if ctx is None:
            if len(self._contexts) >= TEMPLATE_CACHE:
                self._contexts.clear()
            ctx = Context("sip2", account.login, session.source, account.policy)
            self._contexts[(account.login, session.source)] = ctx
        return ctx

    def patron_now(self, message: Message, session: Session) -> Prepared | None:
        """23/63 with a PIN the core can settle without the store, else None."""
        request = PatronRequest.from_message(message)
        pin = request.pin
        if not pin:
            return None  # no PIN: a store lookup
        account = session.account
        assert account is not None  # the session dispatches these only after login
        decision = self.authenticator.settle(request.barcode, pin, self._context(account, session))
        if decision is None:
            return None
        return self._checked(request, account, decision)

    async def patron(self, message: Message, session: Session) -> Message | Prepared:
        """23/63: the PIN check (or, without a PIN, a lookup)."""
        request = PatronRequest.from_message(message)
        account = session.account
        assert account is not None  # the session dispatches these only after login
        options = self.options(account)
        date, today = self._dates()
        pin = request.pin
        if pin is None or not pin:
            if options.wrong_pin_as_unknown:
                patron = None
            else:
                try:
                    patron = await self.authenticator.lookup(request.barcode)
                except StoreUnavailable:
                    return answers.unavailable(request, date, options).to_message()
            return answers.lookup_answer(
                request, patron, date=date, today=today, policy=account.policy, options=options
            ).to_message()
        ctx = self._context(account, session)
        decision = await self.authenticator.authenticate(request.barcode, pin, ctx)
        return self._checked(request, account, decision)

    def _checked(self, request: PatronRequest, account: Account, decision: Decision) -> Prepared:
        return self._answer(request.code, request.barcode, request.institution, account, decision)

    def _answer(
        self, code: str, barcode: str, institution: str, account: Account, decision: Decision
    ) -> Prepared:
        """The 24/64 for a PIN check, from a template kept per terminal question.

        A self-check asks about the same patron several times a minute and only the
        transaction date changes, so the serialised answer is kept per (request code, card,
        institution, account) together with the decision and the day it was made for; the
        core hands back the same `Decision` object while its verification is cached, so an
        identity check says whether the template still fits."""
        memo = self._date_memo  # `_dates`, inline: this is every cached PIN check's answer
        if int(self.clock()) != memo[0]:
            self._dates()
            memo = self._date_memo
        _, date, today = memo
        if decision.outcome is BAD_INPUT:
            # answered and forgotten: a hostile barcode or institution must not fill the table
            answer = answers.check_answer(
                _asked(code, barcode, institution),
                decision,
                date=date,
                today=today,
                policy=account.policy,
                options=self.options(account),
            )
            return Prepared(render(template(answer.to_message()), {"transaction_date": date}))
        key = (code, barcode, institution, account.login)
        kept = self._templates.get(key)
        if kept is None or kept.decision is not decision or kept.today != today:
            answer = answers.check_answer(
                _asked(code, barcode, institution),
                decision,
                date=date,
                today=today,
                policy=account.policy,
                options=self.options(account),
            )
            kept = _Kept(decision, today, template(answer.to_message()))
            if len(self._templates) >= TEMPLATE_CACHE:
                self._templates.clear()
            self._templates[key] = kept
        ready = kept.answer
        if ready is None or kept.date != date:  # rendered again when the date moves on
            kept.date = date
            kept.answer = ready = Prepared(render(kept.template, {"transaction_date": date}))
        return ready

    async def status(self, session: Session) -> Message:
        """99 → 98."""
        return self._status(session, await self.online())

    def _status(self, session: Session, online: bool) -> Message:
        account = session.account
        return answers.acs_status(
            online=online,
            date=sip_date(self.clock()),
            institution=account.settings.institution if account is not None else "",
            supported=self.bx,
            circulation=self.circulation.supported,
            library_name=account.settings.library_name if account is not None else "",
        ).to_message()

    def end_session(self, message: Message, session: Session) -> Prepared:
        """35 → 36Y: the bridge holds no patron session, so ending one always succeeds."""
        request = EndSession.from_message(message)
        account = session.account
        institution = (account.settings.institution if account else "") or request.institution
        return self._ended(request.barcode, institution)

    def _ended(self, barcode: str, institution: str) -> Prepared:
        """36Y as prepared text: no `EndSessionResponse` built and serialised per 35."""
        return Prepared(answers.end_session_text(barcode, institution, sip_date(self.clock())))

    async def block(self, message: Message, session: Session) -> Message:
        """01: block the card in the store (audited by the core), answer with a 24."""
        block = BlockPatron.from_message(message)
        account = session.account
        assert account is not None
        options = self.options(account)
        date, today = self._dates()
        request = PatronRequest("23", block.barcode, None, block.institution)
        actor = f"sip2:{account.login}"
        text = "This card is now blocked."
        patron: Patron | None = None
        try:
            if valid_barcode(block.barcode):
                patron = await self.authenticator.block(
                    block.barcode, block.message or "blocked by a SIP2 terminal", actor=actor
                )
        except NotSupported:
            self.audit.event(
                "patron_block_refused", barcode=block.barcode, actor=actor, reason="not supported"
            )
            text = "This card cannot be blocked here. Please ask staff."
            try:
                patron = await self.authenticator.lookup(block.barcode)
            except StoreUnavailable:
                return answers.unavailable(request, date, options).to_message()
        except StoreUnavailable:
            return answers.unavailable(request, date, options).to_message()
        if patron is None:
            return answers.unknown(request, date, options, answers.CARD_UNKNOWN).to_message()
        return answers.known(
            request,
            patron,
            pin_ok=False,
            text=text,
            date=date,
            today=today,
            policy=account.policy,
            options=options,
        ).to_message()
