"""The desk's pages and actions. Every handler starts with `gate`, which signs the visitor in
or refuses them (303 to sign-in, 403 for a role without the action, 403 for a POST without its
CSRF token) before anything else is read: the role check is on the server, whatever the page
showed. No page ever puts a PIN back into its HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from bridge.core.auth import ChangeResult, valid_barcode
from bridge.core.patron import Outcome, Patron
from bridge.core.pin import HashFormatError
from bridge.core.secret import Secret
from bridge.core.store import NewPatron, NotSupported, StoreUnavailable
from bridge.core.throttle import GuardUnavailable, Result, Ticket
from bridge.records import RowError, row_to_patron
from bridge.staff import directory
from bridge.staff.accounts import Account, valid_name
from bridge.staff.roles import Action, allowed
from bridge.staff.search import find
from bridge.staff.standing import standing_of
from bridge.staff.state import Desk, log
from bridge.staff.visit import Staff, StaffVisit, session_key
from bridge.state.shared import card_counter

CHECKS = ("photo_id", "card")


def desk_of(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


def card_path(barcode: str, done: str | None = None) -> str:
    return f"/card/{quote(barcode, safe='')}" + (f"?done={done}" if done else "")


async def gate(
    request: Request, action: Action
) -> tuple[StaffVisit, dict[str, str] | None, Response | None]:
    """(visit, posted fields, refusal). A refusal is the response to send as it is."""
    desk = desk_of(request)
    visit = await StaffVisit.of(desk, request)
    staff = visit.staff
    if staff is None:
        if request.method == "GET":
            return visit, None, visit.redirect("/login")
        return visit, None, _forbidden(visit, "staff.signed_out")
    if not allowed(staff.account.role, action):
        desk.authenticator.audit.event(
            "staff_forbidden",
            staff=staff.name,
            role=staff.account.role.value,
            action=action.value,
            source=visit.source,
            severity="warning",
        )
        return visit, None, _forbidden(visit, "staff.forbidden")
    if request.method != "POST":
        return visit, None, None
    form = await visit.form()
    if form is None:
        desk.authenticator.audit.event("csrf_refused", source=visit.source, staff=staff.name)
        return visit, None, _forbidden(visit, "csrf.message")
    return visit, form, None


def _forbidden(visit: StaffVisit, message: str) -> Response:
    return visit.render("message.html", status=403, title="staff.forbidden_title", message=message)


# -- sign in and out ------------------------------------------------------------------------
async def home(request: Request) -> Response:
    visit = await StaffVisit.of(desk_of(request), request)
    return visit.redirect("/desk" if visit.staff else "/login")


async def login(request: Request) -> Response:
    desk = desk_of(request)
    visit = await StaffVisit.of(desk, request)
    if request.method == "GET":
        if visit.staff is not None:
            return visit.redirect("/desk")
        notice = "staff.signed_out_notice" if request.query_params.get("out") == "1" else None
        return _login_page(visit, name="", error=None, notice=notice)
    form = await visit.form()
    if form is None:
        desk.authenticator.audit.event("csrf_refused", source=visit.source)
        return _forbidden(visit, "csrf.message")
    name = form.get("name", "").strip().lower()
    password = Secret(form.get("password", ""))
    branch = form.get("branch", "0")
    audit = desk.authenticator.audit
    key = name if valid_name(name) else None
    now = desk.clock()
    try:
        reserved = await desk.throttle.reserve(throttle_key(key), visit.source, now)
    except GuardUnavailable as exc:
        log.error("staff_guard_unavailable", error=str(exc))
        return _login_page(visit, name=name, error="error.unavailable", status=503)
    if not isinstance(reserved, Ticket):
        audit.event("staff_login_refused", staff=key, source=visit.source, reason=reserved.reason)
        return _login_page(visit, name=name, error="staff.login_locked", status=429)
    try:
        account, ok, factor = await _check_sign_in(desk, visit, key, password, form, now)
    except BaseException:
        await desk.throttle.settle(reserved, Result.RELEASE, desk.clock())
        raise
    if account is None and factor == "directory":
        await desk.throttle.settle(reserved, Result.RELEASE, desk.clock())
        return _login_page(visit, name=name, error="staff.directory_down", status=503)
    if (
        not ok
        or account is None
        or not branch.isdigit()
        or int(branch) >= len(desk.settings.branches)
    ):
        await desk.throttle.settle(reserved, Result.FAILURE, desk.clock())
        audit.event(
            "staff_login_failed",
            staff=key,
            source=visit.source,
            factor=factor,
            severity="warning",
        )
        return _login_page(visit, name=name, error="staff.login_failed")
    await desk.throttle.settle(reserved, Result.SUCCESS, desk.clock())
    directory_role = account.role if desk.settings.auth == "ldap" else None
    visit.sign_in(session_key(account.name, int(branch), directory_role))
    audit.event(
        "staff_login",
        staff=account.name,
        role=account.role.value,
        second_factor=bool(account.totp_secret),
        branch=desk.settings.branches[int(branch)],
        source=visit.source,
    )
    return visit.redirect("/desk")


def throttle_key(name: str | None) -> str:
    """The staff sign-in limits' key: `staff <name>` (a space, so never a card number on a
    guard shared with patrons); one key for every malformed name."""
    return f"staff {name or '?'}"


async def _check_sign_in(
    desk: Desk,
    visit: StaffVisit,
    key: str | None,
    password: Secret,
    form: dict[str, str],
    now: float,
) -> tuple[Account | None, bool, str]:
    """(account, right?, the factor that decided: "password", "totp"; "directory" with no
    account when the directory could not be asked)."""
    if desk.settings.auth == "ldap":
        account, failed = await _directory_account(desk, key, password)
        if failed is not None:
            return None, False, "directory"
        ok = account is not None
    else:
        account = None if key is None else await asyncio.to_thread(desk.accounts.get, key)
        ok = await _password_ok(desk, account, password)
    if ok and account is not None and account.totp_secret:
        code = form.get("code", "")
        return account, desk.totp.check(account.name, account.totp_secret, code, now), "totp"
    return account, ok, "password"


async def _password_ok(desk: Desk, account: Account | None, password: Secret) -> bool:
    """A local account's password check (the same KDF work when there is no such account)."""
    if account is None or account.disabled or not password:
        await desk.hasher.dummy_verify(password or Secret("x"))
        return False
    try:
        return (await desk.hasher.verify(password, account.password_hash)).ok
    except HashFormatError:
        return False


async def _directory_account(
    desk: Desk, key: str | None, password: Secret
) -> tuple[Account | None, str | None]:
    """(the account the directory vouches for, or None; a message key when it cannot answer)."""
    settings = desk.settings.ldap
    if key is None or settings is None:
        return None, None
    try:
        role = await asyncio.to_thread(directory.sign_in, settings, desk.base_dir, key, password)
    except directory.DirectoryUnavailable as exc:
        log.error("staff_directory_failed", error=str(exc))
        return None, "staff.directory_down"
    return (None if role is None else Account(key, role, "")), None


def _login_page(
    visit: StaffVisit, *, name: str, error: str | None, notice: str | None = None, status: int = 200
) -> Response:
    return visit.render(
        "login.html",
        status=status,
        name=name,
        error=error,
        notice=notice,
        branches=list(enumerate(visit.desk.settings.branches)),
    )


async def logout(request: Request) -> Response:
    desk = desk_of(request)
    visit = await StaffVisit.of(desk, request)
    form = await visit.form()
    if form is None:
        return _forbidden(visit, "csrf.message")
    if visit.staff is not None:
        desk.authenticator.audit.event("staff_logout", staff=visit.staff.name, source=visit.source)
    visit.sign_out()
    return visit.redirect("/login?out=1")


# -- find a card ----------------------------------------------------------------------------
async def desk_page(request: Request) -> Response:
    visit, _, refusal = await gate(request, Action.LOOK_UP)
    if refusal is not None:
        return refusal
    query = request.query_params.get("q", "").strip()[:128]
    role = visit.staff.account.role if visit.staff else None
    can_new = role is not None and allowed(role, Action.NEW_CARD)
    can_manage = (
        role is not None
        and allowed(role, Action.MANAGE_STAFF)
        and visit.desk.settings.auth == "local"
    )
    if not query:
        return visit.render(
            "desk.html", query="", results=None, error=None, can_new=can_new, can_manage=can_manage
        )
    try:
        exact, results = await find(visit.desk, query)
    except StoreUnavailable:
        return visit.render(
            "desk.html",
            query=query,
            results=None,
            error="error.unavailable",
            can_new=can_new,
            can_manage=can_manage,
        )
    if exact is not None:
        return visit.redirect(card_path(exact.barcode))
    return visit.render(
        "desk.html",
        query=query,
        results=results,
        error=None,
        can_new=can_new,
        can_manage=can_manage,
    )


# -- the card ---------------------------------------------------------------------------------
async def patron_of(visit: StaffVisit, barcode: str) -> tuple[Patron | None, Response | None]:
    if not valid_barcode(barcode):
        return None, visit.render(
            "message.html", status=404, title="staff.no_card", message="staff.no_card_text"
        )
    try:
        patron = await visit.desk.authenticator.lookup(barcode)
    except StoreUnavailable:
        return None, visit.render(
            "message.html", status=503, title="error.title", message="error.unavailable"
        )
    if patron is None:
        return None, visit.render(
            "message.html", status=404, title="staff.no_card", message="staff.no_card_text"
        )
    return patron, None


class CardAction(NamedTuple):
    """A POST on a card page that passed the gate, and the card it acts on."""

    visit: StaffVisit
    form: dict[str, str]
    staff: Staff
    patron: Patron


async def card_action(request: Request, action: Action) -> CardAction | Response:
    """`gate`, then the card the path names; else the response that refuses (sign-in, role,
    CSRF, no such card, store down), sent as it is."""
    visit, form, refusal = await gate(request, action)
    if refusal is not None or form is None or visit.staff is None:
        return refusal  # type: ignore[return-value]
    patron, missing = await patron_of(visit, request.path_params["barcode"])
    if patron is None:
        return missing  # type: ignore[return-value]
    return CardAction(visit, form, visit.staff, patron)


async def card(request: Request) -> Response:
    visit, _, refusal = await gate(request, Action.LOOK_UP)
    if refusal is not None:
        return refusal
    patron, missing = await patron_of(visit, request.path_params["barcode"])
    if patron is None:
        return missing  # type: ignore[return-value]
    done = request.query_params.get("done")
    return await card_page(visit, patron, errors={}, notice=done if done in NOTICES else None)


NOTICES = ("pin", "pin_patron", "unlock", "block", "unblock", "link", "no_link", "new")


async def card_page(
    visit: StaffVisit,
    patron: Patron,
    *,
    errors: dict[str, str],
    notice: str | None = None,
    status: int = 200,
    check: str = "",
) -> Response:
    desk = visit.desk
    auth = desk.authenticator
    now = auth.clock()
    counter = await card_counter(auth.throttle, auth.canonical(patron.barcode), now)
    standing = standing_of(
        patron,
        counter,
        now=now,
        today=auth.today(),
        fines_limit=desk.fines_limit,
        minor=desk.is_minor(patron),
    )
    history = await desk.history.recent(patron.barcode, desk.settings.history_shown)
    role = visit.staff.account.role if visit.staff else None
    return visit.render(
        "card.html",
        status=status,
        patron=patron,
        standing=standing,
        history=history,
        errors=errors,
        notice=notice,
        check=check,
        can_change=desk.can_change_pin,
        can_one_time=auth.can_issue_one_time,
        can_block=auth.can_block and role is not None and allowed(role, Action.BLOCK),
        can_links=desk.can_send_links and bool(patron.email),
        path=card_path(patron.barcode),
    )


def check_errors(visit: StaffVisit, patron: Patron, check: str) -> dict[str, str]:
    """The library's rule before any new PIN: photo ID seen, or for a minor the card."""
    if check not in CHECKS:
        return {"check": visit.t("staff.check_required")}
    if check == "card" and not visit.desk.is_minor(patron):
        return {"check": visit.t("staff.check_adult")}
    return {}


def audit_reset(visit: StaffVisit, staff: Staff, patron: Patron, check: str, how: str) -> None:
    """The audit line of every PIN reset at the desk: who, where, which check, and how the PIN
    was chosen (`staff_typed`, `patron_typed`, `one_time`)."""
    visit.desk.authenticator.audit.event(
        "staff_pin_reset",
        barcode=patron.barcode,
        staff=staff.name,
        role=staff.account.role.value,
        branch=staff.branch,
        check=check,
        minor=visit.desk.is_minor(patron),
        how=how,
        source=visit.source,
    )


async def reset_pin(request: Request) -> Response:
    target = await card_action(request, Action.RESET_PIN)
    if not isinstance(target, CardAction):
        return target
    visit, form, staff, patron = target
    desk = visit.desk
    check = form.get("check", "")
    errors = check_errors(visit, patron, check)
    new, again = Secret(form.get("new_pin", "")), Secret(form.get("new_again", ""))
    if not errors and not new.matches(again):
        errors["new_again"] = visit.t("pin.mismatch")
    if not errors:
        result = await desk.authenticator.set_pin(patron.barcode, new, actor=f"staff:{staff.name}")
        if result.ok:
            audit_reset(visit, staff, patron, check, "staff_typed")
            desk.notify_changed(patron, visit.t)
            return visit.redirect(card_path(patron.barcode, "pin"))
        errors = change_errors(visit, result)
    return await card_page(visit, patron, errors=errors, status=200, check=check)


def change_errors(visit: StaffVisit, result: ChangeResult) -> dict[str, str]:
    """A refused reset, per field: the policy's reason (in the patron's wording), or why the
    store could not take it."""
    if result.policy is not None:
        return {"new_pin": visit.policy_text(result.policy)}
    if result.outcome is Outcome.STORE_UNAVAILABLE:
        return {"form": visit.t("error.unavailable")}
    return {"form": visit.t("staff.pin_elsewhere")}


async def clear_lock(request: Request) -> Response:
    target = await card_action(request, Action.CLEAR_LOCK)
    if not isinstance(target, CardAction):
        return target
    visit, _form, staff, patron = target
    auth = visit.desk.authenticator
    auth.clear_lock(patron.barcode, actor=f"staff:{staff.name}@{staff.branch}")
    auth.invalidate(patron.barcode)
    return visit.redirect(card_path(patron.barcode, "unlock"))


async def block(request: Request) -> Response:
    target = await card_action(request, Action.BLOCK)
    if not isinstance(target, CardAction):
        return target
    visit, form, staff, patron = target
    reason = " ".join(form.get("reason", "").split())[:120]
    if not reason:
        return await card_page(
            visit, patron, errors={"reason": visit.t("staff.block_reason_required")}
        )
    actor = f"staff:{staff.name}@{staff.branch}"
    try:
        await visit.desk.authenticator.block(patron.barcode, reason, actor=actor)
    except (NotSupported, StoreUnavailable):
        return await card_page(visit, patron, errors={"form": visit.t("staff.cannot_block")})
    return visit.redirect(card_path(patron.barcode, "block"))


async def unblock(request: Request) -> Response:
    target = await card_action(request, Action.UNBLOCK)
    if not isinstance(target, CardAction):
        return target
    visit, _form, staff, patron = target
    actor = f"staff:{staff.name}@{staff.branch}"
    try:
        await visit.desk.authenticator.unblock(patron.barcode, actor=actor)
    except (NotSupported, StoreUnavailable):
        return await card_page(visit, patron, errors={"form": visit.t("staff.cannot_block")})
    return visit.redirect(card_path(patron.barcode, "unblock"))


async def send_link(request: Request) -> Response:
    target = await card_action(request, Action.RESEND_LINK)
    if not isinstance(target, CardAction):
        return target
    visit, _form, staff, patron = target
    sent = False
    with contextlib.suppress(StoreUnavailable):
        sent = await visit.desk.send_link(patron, visit.t, visit.source)
    visit.desk.authenticator.audit.event(
        "staff_reset_link",
        barcode=patron.barcode,
        staff=staff.name,
        branch=staff.branch,
        sent=sent,
    )
    return visit.redirect(card_path(patron.barcode, "link" if sent else "no_link"))


# -- a new card -------------------------------------------------------------------------------
NEW_FIELDS = ("barcode", "name", "email", "category", "expires")


async def new_card(request: Request) -> Response:
    """A supervisor makes a card with its first PIN (the patron's choice, the policy applies).
    With an ILS store the page says the card is made in the ILS, and the PIN part is the
    card page's reset form once the card exists there."""
    visit, form, refusal = await gate(request, Action.NEW_CARD)
    if refusal is not None or visit.staff is None:
        return refusal  # type: ignore[return-value]
    auth = visit.desk.authenticator
    if not auth.can_add_patrons:
        return visit.render("new.html", writable=False, values={}, errors={})
    if form is None:
        return visit.render("new.html", writable=True, values={}, errors={})
    values = {k: " ".join(form.get(k, "").split())[:128] for k in NEW_FIELDS}
    errors: dict[str, str] = {}
    try:
        new = row_to_patron(values, auth.pin_policy)
    except RowError as exc:
        field = str(exc).partition(":")[0]
        key = field if field in NEW_FIELDS else "form"
        errors[key] = visit.t("staff.new_bad_" + ("barcode" if key == "barcode" else "field"))
        return visit.render("new.html", writable=True, values=values, errors=errors)
    pin, again = Secret(form.get("new_pin", "")), Secret(form.get("new_again", ""))
    verdict = auth.pin_policy.check(pin)
    if not verdict.ok:
        errors["new_pin"] = visit.policy_text(verdict)
    elif not pin.matches(again):
        errors["new_again"] = visit.t("pin.mismatch")
    if errors:
        return visit.render("new.html", writable=True, values=values, errors=errors)
    actor = f"staff:{visit.staff.name}@{visit.staff.branch}"
    try:
        await auth.add_patron(NewPatron(new.patron, pin=pin), actor=actor)
    except ValueError:
        errors["barcode"] = visit.t("staff.new_exists")
    except (StoreUnavailable, NotSupported):
        errors["form"] = visit.t("error.unavailable")
    if errors:
        return visit.render("new.html", writable=True, values=values, errors=errors)
    return visit.redirect(card_path(new.patron.barcode, "new"))
