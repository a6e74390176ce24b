"""Config file → frozen, typed, validated structs.

`load(path)` reads TOML once, resolves `*_file`/`*_env` secrets, checks every key and type and
raises `ConfigError` whose message is one line: `FILE: dotted.key[i]: what is wrong`, never a
secret. Relative paths in the file are relative to the file's own directory. Nothing else in
the program reads TOML or the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from bridge.core.patron import ClientPolicy
from bridge.federation.saml_settings import SamlSettings
from bridge.federation.settings import OidcSettings
from bridge.ldap.settings import LdapSettings
from bridge.metrics.settings import MetricsSettings
from bridge.portal.settings import PortalSettings, SmtpSettings
from bridge.radius.settings import RadiusSettings
from bridge.runtime.settings import ServerSettings
from bridge.settings import SECRET_KEYS, PolicySettings, Section, parse_listen
from bridge.sip2.settings import Sip2Settings
from bridge.staff.settings import StaffSettings
from bridge.state.settings import Backend, StateSettings, sentinel_address

DEFAULT_CONFIG = "conf/bridge.toml"


class ConfigError(Exception):
    """One line naming the file and the key."""


# --- sections owned by the core ----------------------------------------------------------------


class SecuritySettings(Section, frozen=True):
    pepper_file: str = "var/pepper.key"
    kdf: Literal["argon2id", "scrypt"] = "argon2id"
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=8192, le=1048576)] = 19456
    argon2_iterations: Annotated[int, msgspec.Meta(ge=1, le=20)] = 2
    argon2_lanes: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    scrypt_log2_n: Annotated[int, msgspec.Meta(ge=10, le=22)] = 14
    scrypt_r: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    scrypt_p: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    kdf_workers: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0  # 0: one per CPU


class PinSettings(Section, frozen=True):
    min_length: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    max_length: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    forbid_repeats: bool = True
    blocklist_file: str | None = None
    one_time_hours: Annotated[int, msgspec.Meta(ge=1, le=720)] = 72  # staff-issued one-time PIN


class ThrottleSettings(Section, frozen=True):
    state: Literal["sqlite", "memory", "store"] = "sqlite"  # "store": the store's database
    path: str = "var/throttle.db"
    card_free_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    card_delay_base: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    card_delay_max: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    card_lock_after: Annotated[int, msgspec.Meta(ge=1)] = 10
    card_lock_seconds: Annotated[float, msgspec.Meta(ge=0)] = 900.0
    card_forget_after: Annotated[float, msgspec.Meta(ge=0)] = 3600.0
    source_max_failures: Annotated[int, msgspec.Meta(ge=1)] = 30
    source_window: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    source_block_seconds: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    global_max_failures: Annotated[int, msgspec.Meta(ge=1)] = 300
    global_window: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # Bounded work (bridge/core/gate.py): checks calling the store at once (0: four per
    # KDF worker), checks pending in total and per source (beyond: BUSY at once), and how long
    # a check may wait for a running slot.
    max_active_checks: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 0
    max_pending_checks: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 256
    max_pending_per_source: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 64
    check_wait_deadline: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0

    def problems(self) -> list[tuple[str, str]]:
        """Cross-key rules of the work bounds."""
        found = []
        if self.max_pending_per_source > self.max_pending_checks:
            found.append(("max_pending_per_source", "greater than throttle.max_pending_checks"))
        if self.max_active_checks > self.max_pending_checks:
            found.append(("max_active_checks", "greater than throttle.max_pending_checks"))
        return found


class CacheSettings(Section, frozen=True):
    ttl: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    max_entries: Annotated[int, msgspec.Meta(ge=0)] = 100_000


class AuditSettings(Section, frozen=True):
    barcode: Literal["masked", "full", "hash"] = "masked"
    destination: str = "stderr"  # "stderr", "stdout" or a file path


class LogSettings(Section, frozen=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ControlSettings(Section, frozen=True):
    socket: str = "var/bridge.sock"


# --- the whole file ------------------------------------------------------------------------------


class Config(Section, frozen=True):
    store: dict[str, Any]
    security: SecuritySettings = SecuritySettings()
    pin: PinSettings = PinSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    cache: CacheSettings = CacheSettings()
    audit: AuditSettings = AuditSettings()
    log: LogSettings = LogSettings()
    policy: PolicySettings = PolicySettings()
    control: ControlSettings = ControlSettings()
    server: ServerSettings = ServerSettings()
    state: StateSettings = StateSettings()
    sip2: Sip2Settings | None = None
    ldap: LdapSettings | None = None
    radius: RadiusSettings | None = None
    portal: PortalSettings | None = None
    smtp: SmtpSettings | None = None
    metrics: MetricsSettings | None = None  # absent: no metrics listener
    staff: StaffSettings | None = None
    oidc: OidcSettings | None = None
    saml: SamlSettings | None = None  # served on the [oidc] listener
    # Filled by load(): where relative paths start, and the file's name for messages.
    base_dir: str = "."
    source: str = "<memory>"

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def client_policy(self, own: PolicySettings | None) -> ClientPolicy:
        """A client's own policy, or the global `[policy]` when it sets none."""
        return (own or self.policy).client_policy()

    @property
    def store_plugin(self) -> str:
        return str(self.store.get("plugin", ""))

    @property
    def state_backend(self) -> Backend:
        """`[state] backend`, else the older `[throttle] state`."""
        return self.state.backend or self.throttle.state

    @property
    def state_path(self) -> Path:
        """The SQLite state file: `[state] path`, else `[throttle] path`."""
        return self.path(self.state.path or self.throttle.path)


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _format_error(source: str, exc: msgspec.ValidationError | msgspec.DecodeError) -> ConfigError:
    text = str(exc)
    match = _AT.search(text)
    path = ""
    if match:
        text = text[: match.start()]
        path = match.group("path").lstrip(".")
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    if unknown:
        path = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        text = "unknown key"
    elif missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        text = "required key is missing"
    return ConfigError(f"{source}: {path or '(top)'}: {text}")


def _resolve_secrets(data: Any, where: str, source: str, base: Path) -> Any:
    """Replace `NAME_file` / `NAME_env` with NAME's value, for every NAME in SECRET_KEYS."""
    if isinstance(data, list):
        return [_resolve_secrets(v, f"{where}[{i}]", source, base) for i, v in enumerate(data)]
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = _resolve_secrets(value, f"{where}.{key}" if where else key, source, base)
    for name in SECRET_KEYS:
        given = [k for k in (name, f"{name}_file", f"{name}_env") if k in out]
        if len(given) > 1:
            raise ConfigError(f"{source}: {where}.{name}: give only one of {', '.join(given)}")
        key_path = f"{where}.{name}" if where else name
        if f"{name}_file" in out:
            ref = out.pop(f"{name}_file")
            if not isinstance(ref, str):
                raise ConfigError(f"{source}: {key_path}_file: expected a path string")
            path = Path(ref) if Path(ref).is_absolute() else base / ref
            try:
                out[name] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{source}: {key_path}_file: cannot read {path}: {exc.strerror}"
                ) from None
            except UnicodeDecodeError:  # its message quotes a byte of the secret: never shown
                raise ConfigError(f"{source}: {key_path}_file: {path} is not UTF-8 text") from None
        elif f"{name}_env" in out:
            ref = out.pop(f"{name}_env")
            if not isinstance(ref, str):
                raise ConfigError(f"{source}: {key_path}_env: expected a variable name")
            if ref not in os.environ:
                raise ConfigError(f"{source}: {key_path}_env: variable {ref} is not set")
            out[name] = os.environ[ref]
    return out


def loads(text: str, *, source: str = "<memory>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: (syntax): {exc}") from None
    base = base_dir or Path(".")
    data = _resolve_secrets(data, "", source, base)
    if "store" not in data:
        raise ConfigError(f"{source}: store: required table is missing")
    data["base_dir"] = str(base)
    data["source"] = source
    try:
        config = msgspec.convert(data, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _format_error(source, exc) from None
    _check(config)
    return config


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: (file): cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: (file): not UTF-8 text") from None
    return loads(text, source=str(path), base_dir=path.resolve().parent)


def _check(config: Config) -> None:
    """Rules that cross keys, and listen addresses."""
    src = config.source
    if not config.store_plugin:
        raise ConfigError(f"{src}: store.plugin: required key is missing")
    if config.pin.min_length > config.pin.max_length:
        raise ConfigError(f"{src}: pin.min_length: greater than pin.max_length")
    if config.pin.blocklist_file is not None:
        blocklist = config.path(config.pin.blocklist_file)
        if not blocklist.is_file():
            raise ConfigError(f"{src}: pin.blocklist_file: cannot read {blocklist}")
    for name in ("sip2", "ldap", "radius"):
        section = getattr(config, name)
        if section is None:
            continue
        for i, addr in enumerate(section.listen):
            try:
                parse_listen(addr)
            except ValueError as exc:
                raise ConfigError(f"{src}: {name}.listen[{i}]: {exc}") from None
    upstream = config.sip2.upstream if config.sip2 is not None else ""
    if upstream and upstream != config.store_plugin:
        raise ConfigError(f"{src}: sip2.upstream: {upstream!r} is not the configured store.plugin")
    for key, message in config.throttle.problems():
        raise ConfigError(f"{src}: throttle.{key}: {message}")
    _check_scale_out(config)
    for name in ("portal", "smtp", "staff", "oidc", "saml"):  # sections with cross-key rules
        section = getattr(config, name)
        for key, message in section.problems() if section is not None else ():
            raise ConfigError(f"{src}: {name}.{key}: {message}")


def _check_scale_out(config: Config) -> None:
    """`[server] workers` and `[state]`: refuse what would give each worker its own counters."""
    src, state = config.source, config.state
    if state.backend is not None:
        given = config.throttle.state
        if given != ThrottleSettings().state and given != state.backend:
            raise ConfigError(
                f"{src}: state.backend: {state.backend!r} contradicts throttle.state {given!r}"
            )
    if config.server.worker_count() > 1 and config.state_backend == "memory":
        raise ConfigError(
            f"{src}: server.workers: {config.state_backend!r} throttle state would be per worker;"
            ' set [state] backend = "sqlite" (one host) or "redis"'
        )
    if config.state_backend == "redis":
        scheme, sep, rest = state.url.partition("://")
        if not sep or scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"{src}: state.url: want redis://, rediss:// or unix://")
        if "@" in rest.split("/", 1)[0] if scheme != "unix" else "@" in rest:
            raise ConfigError(
                f"{src}: state.url: no credentials in the URL; use state.password_file or"
                " state.password_env"
            )
        if state.sentinels:
            if scheme == "unix":
                raise ConfigError(
                    f"{src}: state.sentinels: want redis:// or rediss:// in state.url"
                )
            for entry in state.sentinels:
                try:
                    sentinel_address(entry)
                except ValueError as exc:
                    raise ConfigError(f"{src}: state.sentinels: {exc}") from None
            database = rest.partition("/")[2].partition("?")[0]
            if database and not database.isdigit():
                raise ConfigError(
                    f"{src}: state.url: with sentinels, want redis:///N or rediss:///N"
                    " (N: the database number)"
                )


def decode_section(config: Config, table: dict[str, Any], kind: type[Any], where: str) -> Any:
    """Decode a plugin's own table (e.g. `[store]` minus `plugin`) with the same strictness."""
    try:
        return msgspec.convert(table, kind, strict=True)
    except msgspec.ValidationError as exc:
        err = _format_error(config.source, exc)
        # Re-root the path under the table's name.
        msg = str(err).split(": ", 1)[1]
        raise ConfigError(f"{config.source}: {where}.{msg}") from None


def masked(config: Config) -> dict[str, Any]:
    """The effective config as plain data with every secret replaced by `***`."""

    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: ("***" if k in SECRET_KEYS and v is not None else mask(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    data = msgspec.to_builtins(config)
    data.pop("source", None)
    result: dict[str, Any] = mask(data)
    return result


def control_socket_of(path: str | Path) -> Path | None:
    """The control socket a config file names, read leniently: `patron-bridge reload` must
    reach the daemon even when the edited file no longer validates (the daemon then refuses
    it with the one-line error and keeps its running config). None when the file cannot be
    read as TOML at all."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    control = data.get("control")
    value = control.get("socket") if isinstance(control, dict) else None
    socket = Path(value) if isinstance(value, str) and value else Path(ControlSettings().socket)
    return socket if socket.is_absolute() else path.resolve().parent / socket
