"""Reload the config into the running daemon (SIGHUP, `patron-bridge reload`).

The file is read and checked as at start; a config that fails is refused with its one-line
error and the running one stays. Then everything the new config needs is built before anything
is swapped (accounts, client tables, PIN policy, TLS contexts), so a reload applies entirely or
not at all. Applied live:

- `sip2.accounts`: new logins work at once; open connections stay up; a connection logged in
  with an account that is gone is logged out, so its next request closes it (SIP2 has no error
  message for it: the self-check connects and logs in again);
- `ldap.service_accounts`: open connections stay bound as their account (found again by DN);
  one whose account is gone gets a Notice of Disconnection at its next request;
- `radius.clients` (networks, secrets, reply attributes);
- `policy` and every client's own policy, `pin` (the PIN policy and its blocklist);
- TLS certificates and keys of the SIP2 and LDAP listeners, and of the PIN pages (and the
  OpenID Connect/SAML listener, which serves their pair), the staff desk and the metrics
  listener when they serve HTTPS already (new handshakes use them);
- `log.level` and `log.format` (the renderer of the running chain is swapped);
- peppers `patron-bridge pepper rotate` added (`<pepper_file>.N`): they verify at once; which
  one writes is the store's `pepper-active`, taken up after the reload (`bridge.pepper_hosts`).

Anything else that changed (listen addresses, the store, security, throttle, cache, audit,
control, other metrics and portal keys, HTTPS turned on or off, smtp, other front-end keys)
needs a restart and
is named in the answer. Every reload is audited: who asked, which keys changed, what needs a
restart; never a value (secrets live in these keys).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec
import structlog

from bridge.config import Config, ConfigError, load
from bridge.services import Services

log = structlog.get_logger("bridge.reload")

# Keys applied without a restart (a key is live when it is one of these or below one).
LIVE = (
    "sip2.accounts",
    "ldap.service_accounts",
    "radius.clients",
    "policy",
    "pin",
    "sip2.tls_cert",
    "sip2.tls_key",
    "ldap.tls_certificate",
    "ldap.tls_key",
    "portal.tls_cert",
    "portal.tls_key",
    "metrics.tls_cert",
    "metrics.tls_key",
    "staff.tls_cert",
    "staff.tls_key",
    "log.level",
    "log.format",
)
# Live only while HTTPS stays on: a listener that served plain HTTP has no context to load into.
SWITCHED = {
    "portal": ("portal.tls_cert", "portal.tls_key"),
    "metrics": ("metrics.tls_cert", "metrics.tls_key"),
    "staff": ("staff.tls_cert", "staff.tls_key"),
}
IGNORED = ("base_dir", "source")


@dataclass(slots=True)
class ReloadResult:
    ok: bool
    error: str = ""
    applied: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    def answer(self) -> dict[str, object]:
        if not self.ok:
            return {"ok": False, "error": self.error}
        return {"ok": True, "applied": self.applied, "restart_needed": self.restart_needed}


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (tables recursed into, lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            if not prefix and key in IGNORED:
                continue
            where = f"{prefix}.{key}" if prefix else str(key)
            out.extend(changed_keys(old.get(key), new.get(key), where))
        return out
    return [] if old == new else [prefix]


def _live(key: str, old: Config, new: Config) -> bool:
    for section, keys in SWITCHED.items():
        if key in keys:
            before, after = getattr(old, section), getattr(new, section)
            return bool(before and after and before.tls_cert and after.tls_cert)
    return any(key == live or key.startswith(live + ".") for live in LIVE)


def _tls_files(config: Config, cert: str | None, key: str | None, where: str) -> ssl.SSLContext:
    """A context built from the files, to prove they load before the live ones are touched."""
    from bridge.tls import server_context

    assert cert is not None and key is not None
    try:
        return server_context(config.path(cert), config.path(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.source}: {where}: cannot load: {exc}") from None


class Plan:
    """Everything the new config needs, built up front; `apply` only swaps references."""

    def __init__(self, services: Services, new: Config) -> None:
        from bridge.app import pin_policy

        self.services = services
        old = services.config
        # What will run: the old config with the live sections replaced.
        sip2, ldap, radius = old.sip2, old.ldap, old.radius
        if sip2 is not None and new.sip2 is not None:
            sip2 = msgspec.structs.replace(
                sip2,
                accounts=new.sip2.accounts,
                tls_cert=new.sip2.tls_cert,
                tls_key=new.sip2.tls_key,
            )
        if ldap is not None and new.ldap is not None:
            ldap = msgspec.structs.replace(
                ldap,
                service_accounts=new.ldap.service_accounts,
                tls_certificate=new.ldap.tls_certificate,
                tls_key=new.ldap.tls_key,
            )
        if radius is not None and new.radius is not None:
            radius = msgspec.structs.replace(radius, clients=new.radius.clients)
        portal = old.portal
        # HTTPS on or off needs a restart; a new certificate for HTTPS already on does not
        if portal and new.portal and portal.tls_cert and new.portal.tls_cert:
            portal = msgspec.structs.replace(
                portal, tls_cert=new.portal.tls_cert, tls_key=new.portal.tls_key
            )
        metrics = old.metrics
        if metrics and new.metrics and metrics.tls_cert and new.metrics.tls_cert:
            metrics = msgspec.structs.replace(
                metrics, tls_cert=new.metrics.tls_cert, tls_key=new.metrics.tls_key
            )
        staff = old.staff
        if staff and new.staff and staff.tls_cert and new.staff.tls_cert:
            staff = msgspec.structs.replace(
                staff, tls_cert=new.staff.tls_cert, tls_key=new.staff.tls_key
            )
        self.running = msgspec.structs.replace(
            old,
            portal=portal,
            metrics=metrics,
            staff=staff,
            pin=new.pin,
            policy=new.policy,
            sip2=sip2,
            ldap=ldap,
            radius=radius,
            log=msgspec.structs.replace(old.log, level=new.log.level, format=new.log.format),
        )
        self.pin_policy = pin_policy(self.running)
        self.steps: list[Any] = []
        # The builders read client policies from services.config: let them see the new one,
        # and put the old one back whatever happens (apply makes the switch for good).
        services.config = self.running
        try:
            for listener in services.listeners:
                build = getattr(self, f"_{listener.name}", None)
                step = build(listener) if build is not None else None
                if step is not None:
                    self.steps.append(step)
                hook = getattr(listener, "on_reload", None)  # e.g. refetch SAML metadata
                if hook is not None:
                    self.steps.append(hook)
        finally:
            services.config = old

    # -- per front end: build now, return the swap ------------------------------------------
    def _sip2(self, listener: Any) -> Any:
        from bridge.sip2.session import Account, Accounts

        settings = self.running.sip2
        assert settings is not None
        policy = self.running.client_policy
        try:
            accounts = [Account.from_settings(a, policy(a.policy)) for a in settings.accounts]
        except ValueError as exc:
            raise ConfigError(f"{self.running.source}: sip2.accounts: {exc}") from None
        table = Accounts(accounts)
        by_login = {a.login: a for a in accounts}
        context = None
        if settings.tls_listen and getattr(listener, "tls_context", None) is not None:
            _tls_files(self.running, settings.tls_cert, settings.tls_key, "sip2.tls_cert")
            context = listener.tls_context

        def swap() -> None:
            listener.settings = settings
            listener.accounts = table
            listener.handler._contexts.clear()  # per (login, source): holds old policies
            listener.handler._options.clear()
            for conn in list(listener._connections):
                session = getattr(conn, "session", None)
                if session is None:
                    continue
                session.accounts = table
                if session.account is not None:
                    # Gone: logged out, so its next request closes the connection.
                    session.account = by_login.get(session.account.login)
            if context is not None:
                context.load_cert_chain(
                    self.running.path(cast(str, settings.tls_cert)),
                    self.running.path(cast(str, settings.tls_key)),
                )

        return swap

    def _ldap(self, listener: Any) -> Any:
        from bridge.ldap.directory import Directory
        from bridge.ldap.session import AsService, Shared

        settings = self.running.ldap
        assert settings is not None
        old_shared = listener.shared
        shared = Shared(
            self.services,
            Directory(settings),
            starttls=old_shared.starttls,
            today=old_shared.today,
            deadline=old_shared.deadline,
        )
        index = {a.dn.lower(): i for i, a in enumerate(settings.service_accounts)}
        if listener.tls_context is not None:
            _tls_files(
                self.running, settings.tls_certificate, settings.tls_key, "ldap.tls_certificate"
            )

        def moved(old: int | None) -> int | None:
            if old is None:
                return None
            return index.get(old_shared.settings.service_accounts[old].dn.lower())

        def swap() -> None:
            listener.settings = settings
            listener.shared = shared
            for conn in list(listener.connections):
                session = conn.session
                if session is None:
                    continue
                identity = session.identity
                if isinstance(identity, AsService):
                    now = moved(identity.index)
                    if now is None:
                        conn.session = Revoked(session.source, session.tls)
                        continue
                    session.identity = AsService(now)
                session.vendor = moved(session.vendor)
                session._announced = {
                    j for j in (moved(i) for i in session._announced) if j is not None
                }
                session._contexts.clear()
                session.shared = shared
            if listener.tls_context is not None:
                listener.tls_context.load_cert_chain(
                    self.running.path(cast(str, settings.tls_certificate)),
                    self.running.path(cast(str, settings.tls_key)),
                )

        return swap

    def _portal(self, listener: Any) -> Any:
        """The PIN pages' certificate, when they serve HTTPS themselves."""
        return self._https(listener, self.running.portal, "portal.tls_cert")

    def _oidc(self, listener: Any) -> Any:
        """The OpenID Connect/SAML listener serves HTTPS with the PIN pages' pair: a rotation
        must reach both, or sign-ins would keep an old certificate until it expires."""
        return self._https(listener, self.running.portal, "portal.tls_cert")

    def _staff(self, listener: Any) -> Any:
        """The staff desk's certificate, when it serves HTTPS itself."""
        return self._https(listener, self.running.staff, "staff.tls_cert")

    def _metrics(self, listener: Any) -> Any:
        """The metrics listener's certificate, when it serves HTTPS (worker 0 only binds it)."""
        return self._https(listener, self.running.metrics, "metrics.tls_cert")

    def _https(self, listener: Any, settings: Any, where: str) -> Any:
        """Load the files once now (a bad pair refuses the reload), into the live context at
        apply: the context object stays the one the server holds, so new handshakes use the
        new pair and open connections keep theirs."""
        context = getattr(listener, "tls_context", None)
        if settings is None or context is None:
            return None
        _tls_files(self.running, settings.tls_cert, settings.tls_key, where)

        def swap() -> None:
            context.load_cert_chain(
                self.running.path(cast(str, settings.tls_cert)),
                self.running.path(cast(str, settings.tls_key)),
            )

        return swap

    def _radius(self, listener: Any) -> Any:
        from bridge.radius.clients import ClientTable
        from bridge.radius.server import build_client

        settings = self.running.radius
        assert settings is not None
        server = listener.server
        try:
            clients = ClientTable(build_client(spec, self.services) for spec in settings.clients)
        except ValueError as exc:
            raise ConfigError(f"{self.running.source}: radius.clients: {exc}") from None

        def swap() -> None:
            server.settings = settings
            server.clients = clients
            server.contexts.clear()
            server.replies.clear()

        return swap

    def apply(self) -> None:
        from bridge import logs

        self.services.config = self.running
        logs.set_level(self.running.log.level)
        logs.set_format(self.running.log.format)
        self.services.authenticator.pin_policy = self.pin_policy
        for swap in self.steps:
            swap()


class Revoked:
    """Stands in for the LDAP session of a connection whose service account a reload removed:
    its next request gets a Notice of Disconnection (RFC 4511 §4.4.1) and the connection
    closes."""

    def __init__(self, source: str, tls: bool) -> None:
        self.source = source
        self.tls = tls

    def handle_now(self, msg: Any) -> Any:
        from bridge.ldap import answers as rc
        from bridge.ldap import messages as m
        from bridge.ldap.session import Reply

        text = "service account removed by a configuration reload"
        return Reply([m.notice_of_disconnection(rc.UNAVAILABLE, text)], "close")

    async def handle(self, msg: Any) -> Any:
        return self.handle_now(msg)


def _peppers(services: Services, new: Config) -> dict[str, bytes]:
    """Peppers `pepper rotate` wrote since the daemon started (their fingerprints are in the
    store already: the CLI recorded them); held ones stay, so a hash made with any still
    verifies. A damaged file refuses the whole reload."""
    from bridge.app import rotated_peppers

    hasher = services.hasher
    if hasher is None or not hasattr(hasher, "add_peppers"):
        return {}
    held = set(hasher.pepper_ids())
    return {p.id: p.data for p in rotated_peppers(new) if p.id not in held}


def reload(services: Services, *, actor: str) -> ReloadResult:
    """Re-read `services.config.source` and apply what can be applied live."""
    old = services.config
    try:
        new = load(Path(old.source))
        plan = Plan(services, new)
        peppers = _peppers(services, new)
    except ConfigError as exc:
        services.audit.event("config_reload_refused", actor=actor, error=str(exc))
        log.warning("config_reload_refused", actor=actor, error=str(exc))
        return ReloadResult(False, str(exc))
    changes = changed_keys(msgspec.to_builtins(old), msgspec.to_builtins(new))
    applied = [key for key in changes if _live(key, old, new)]
    restart = [key for key in changes if not _live(key, old, new)]
    plan.apply()
    if peppers:
        services.hasher.add_peppers(peppers)
        held = ", ".join(sorted(peppers, key=int))
        applied.append(f"security.pepper_file (pepper {held} held)")
    services.audit.event("config_reloaded", actor=actor, applied=applied, restart_needed=restart)
    return ReloadResult(True, applied=applied, restart_needed=restart)
