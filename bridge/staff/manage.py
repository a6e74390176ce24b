"""Staff accounts in the browser, for the admin role only: list, add, change the role, disable
and enable, set a new password (the staff password policy), enrol or reset TOTP.

Every handler passes `gate` with `Action.MANAGE_STAFF` first (403 for desk and supervisor,
whatever the page showed) and CSRF on every POST; every change is audited with the admin's
name. An admin cannot disable or demote their own account (the last admin could lock everyone
out); with `auth = "ldap"` accounts live in the directory and this page says so. A new TOTP
secret is shown once, on the answer to the POST that made it.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from bridge.core.secret import Secret
from bridge.staff.accounts import Account, check_password, valid_name
from bridge.staff.pages import gate
from bridge.staff.roles import Action, parse_role
from bridge.staff.totp import new_secret, provisioning_uri
from bridge.staff.visit import StaffVisit

DONE = ("added", "role", "disabled", "enabled", "password", "totp_removed")


def account_path(name: str, done: str | None = None) -> str:
    return f"/staff/{quote(name, safe='')}" + (f"?done={done}" if done else "")


async def _admin(request: Request) -> tuple[StaffVisit, dict[str, str] | None, Response | None]:
    visit, form, refusal = await gate(request, Action.MANAGE_STAFF)
    if refusal is None and visit.desk.settings.auth != "local":
        refusal = visit.render(
            "message.html", title="manage.title", message="manage.directory", status=404
        )
    return visit, form, refusal


def _audit(visit: StaffVisit, event: str, name: str, role: str | None = None) -> None:
    assert visit.staff is not None
    visit.desk.authenticator.audit.event(
        event, staff=visit.staff.name, account=name, source=visit.source, role=role
    )


def _password_error(visit: StaffVisit, name: str, form: dict[str, str]) -> str | None:
    password, again = Secret(form.get("password", "")), Secret(form.get("password_again", ""))
    minimum = visit.desk.settings.password_min_length
    verdict = check_password(password, name, minimum)
    if not verdict.ok:
        return visit.t("staffpw." + verdict.code, min=str(minimum))
    if not password.matches(again):
        return visit.t("manage.password_mismatch")
    return None


async def _hash(visit: StaffVisit, form: dict[str, str]) -> str:
    return await visit.desk.hasher.hash(Secret(form.get("password", "")))


async def accounts_page(request: Request) -> Response:
    """GET: the list and the add form. POST: add an account."""
    visit, form, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    errors: dict[str, str] = {}
    values = {"name": "", "role": "desk"}
    if form is not None:
        name = form.get("name", "").strip().lower()
        role = parse_role(form.get("role", ""))
        values = {"name": name[:64], "role": form.get("role", "desk")}
        if not valid_name(name):
            errors["name"] = visit.t("manage.bad_name")
        elif await asyncio.to_thread(visit.desk.accounts.get, name) is not None:
            errors["name"] = visit.t("manage.exists")
        if role is None:
            errors["role"] = visit.t("manage.bad_role")
        problem = _password_error(visit, name, form)
        if problem is not None:
            errors["password"] = problem
        if not errors and role is not None:
            password_hash = await _hash(visit, form)
            await asyncio.to_thread(visit.desk.accounts.put, name, role, password_hash)
            _audit(visit, "staff_account_added", name, role=role.value)
            return visit.redirect(account_path(name, "added"))
    accounts = await asyncio.to_thread(visit.desk.accounts.all)
    return visit.render(
        "accounts.html",
        accounts=accounts,
        errors=errors,
        values=values,
        account_path=account_path,
        password_min=visit.desk.settings.password_min_length,
    )


async def _account(visit: StaffVisit, name: str) -> Account | Response:
    account = await asyncio.to_thread(visit.desk.accounts.get, name)
    if account is None:
        return visit.render(
            "message.html", status=404, title="manage.no_account", message="manage.no_account"
        )
    return account


def _account_page(
    visit: StaffVisit,
    account: Account,
    *,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
    totp: tuple[str, str] | None = None,
    status: int = 200,
) -> Response:
    assert visit.staff is not None
    return visit.render(
        "account.html",
        status=status,
        account=account,
        errors=errors or {},
        notice=notice,
        totp=totp,
        own=account.name == visit.staff.name,
        path=account_path(account.name),
        password_min=visit.desk.settings.password_min_length,
    )


async def account_page(request: Request) -> Response:
    visit, _form, refusal = await _admin(request)
    if refusal is not None:
        return refusal
    found = await _account(visit, request.path_params["name"])
    if not isinstance(found, Account):
        return found
    done = request.query_params.get("done")
    return _account_page(visit, found, notice=done if done in DONE else None)


async def change_account(request: Request) -> Response:
    """POST /staff/{name}/{what}: role, disable, enable, password, totp, totp_remove."""
    visit, form, refusal = await _admin(request)
    if refusal is not None or form is None or visit.staff is None:
        return refusal  # type: ignore[return-value]
    found = await _account(visit, request.path_params["name"])
    if not isinstance(found, Account):
        return found
    account, what = found, request.path_params["what"]
    accounts = visit.desk.accounts
    own = account.name == visit.staff.name
    if what == "role":
        role = parse_role(form.get("role", ""))
        if role is None or own:
            key = "manage.not_own" if own else "manage.bad_role"
            return _account_page(visit, account, errors={"role": visit.t(key)}, status=400)
        await asyncio.to_thread(accounts.update, account.name, role=role)
        _audit(visit, "staff_account_role", account.name, role=role.value)
        return visit.redirect(account_path(account.name, "role"))
    if what in ("disable", "enable"):
        if own:
            return _account_page(
                visit, account, errors={"form": visit.t("manage.not_own")}, status=400
            )
        await asyncio.to_thread(accounts.update, account.name, disabled=what == "disable")
        _audit(visit, f"staff_account_{what}d", account.name)
        return visit.redirect(account_path(account.name, f"{what}d"))
    if what == "password":
        problem = _password_error(visit, account.name, form)
        if problem is not None:
            return _account_page(visit, account, errors={"password": problem})
        password_hash = await _hash(visit, form)
        await asyncio.to_thread(accounts.update, account.name, password_hash=password_hash)
        _audit(visit, "staff_account_password", account.name)
        return visit.redirect(account_path(account.name, "password"))
    if what == "totp":
        secret = new_secret()
        await asyncio.to_thread(accounts.update, account.name, totp_secret=secret)
        _audit(visit, "staff_account_totp", account.name)
        uri = provisioning_uri(secret, account.name, visit.desk.settings.library_name)
        fresh = await _account(visit, account.name)
        shown = fresh if isinstance(fresh, Account) else account
        return _account_page(visit, shown, totp=(secret, uri))
    if what == "totp_remove":
        await asyncio.to_thread(accounts.update, account.name, clear_totp=True)
        _audit(visit, "staff_account_totp_removed", account.name)
        return visit.redirect(account_path(account.name, "totp_removed"))
    return visit.render("message.html", status=404, title="staff.no_card", message="staff.no_card")
