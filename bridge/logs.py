"""The one logging setup: structlog rendering to lines that a background thread writes.

Every event passes `redact` first: values of secret-named keys and any `Secret` become `***`,
so a PIN, password or token cannot reach a line even if a caller passes one by mistake. Rendered
lines go into a queue and a writer thread puts them on disk or the terminal in batches, so the
event loop never waits on a write (and an audit line costs a few microseconds, not a stdlib
logging round trip). JSON in production; readable key=value lines on a TTY. Records from the
standard `logging` module (asyncio, uvicorn, libraries) are routed into the same queue.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final, TextIO

import msgspec
import structlog

from bridge.core.secret import Secret

REDACT_KEYS = frozenset(
    {
        "pin",
        "new_pin",
        "old_pin",
        "password",
        "secret",
        "pepper",
        "token",
        "hash",
        "pin_hash",
        "user_password",
        "ad",
        "ac",
        "co",
        "cookie",
        "authorization",
        "sentinel_password",
    }
)

# One buffer for the life of the process, so loggers cached before a reconfigure stay valid.
# Producers only append (atomic, no lock, no wake-up signal); the writer thread wakes on its own
# timer and drains it. Signalling the writer per line cost a busy listener most of its CPU in
# futex calls between that thread and the event loop.
_BUFFER: deque[tuple[bool, str]] = deque()

# Seconds between drains while lines are flowing. Every wake-up of the writer costs the event
# loop a GIL hand-off (futex calls in both threads): at 5 ms a busy LDAP listener spent about
# 2 µs of system time per bind on them, and at 20 ms one saturated worker still spent 1 to
# 2 µs per cached RADIUS request (bridge/runtime/interpreter.py says why a saturated loop pays
# most). At 50 ms lines still reach the disk within a blink, and `stop` drains the rest.
BATCH_WINDOW = 0.05
IDLE_WINDOW = 0.05  # seconds between drains once the buffer has been empty a while

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}

#: Longest text value a line keeps (characters). Values come from requests (a DN, a SIP2
#: field, a form field, a header): past this they are cut, with a marker saying how long they
#: were, so one hostile request cannot write megabytes or hold them in a buffer.
MAX_VALUE = 256


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """`text` when it is at most `limit` characters, else its start and an explicit
    "(truncated, N bytes)" marker (N: the UTF-8 size of the whole value)."""
    if len(text) <= limit:
        return text
    size = len(text.encode("utf-8", "replace"))
    return f"{text[:limit]}...(truncated, {size} bytes)"


def _clean(key: str, value: Any, depth: int = 0) -> Any:
    if key.lower() in REDACT_KEYS or isinstance(value, Secret):
        return "***"
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if depth < 4 and isinstance(value, dict):  # e.g. request={"pin": ...}
        return {k: _clean(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple):
        return [_clean(key, v, depth + 1) for v in value]
    return value


#: The scalar types `redact` passes through, as a tuple: `isinstance(v, str | int | ...)` builds
#: the union anew on every call (four `|` operations, about 2,000 instructions a key under
#: callgrind), the tuple is built once and means the same.
_SCALARS: Final = (str, int, float, bool, type(None))


#: Field name -> whether it names a secret (`key.lower() in REDACT_KEYS`), remembered: the names
#: are the code's own (keyword arguments, structlog's), so lowering and hashing a new string per
#: field of every line bought nothing. Bounded all the same.
_SECRET_NAME: dict[str, bool] = {}
SECRET_NAMES_KEPT = 1024


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, _SCALARS):
            secret = _SECRET_NAME.get(key)
            if secret is None:
                secret = key.lower() in REDACT_KEYS
                if len(_SECRET_NAME) < SECRET_NAMES_KEPT:
                    _SECRET_NAME[key] = secret
            if not secret:
                if type(value) is str and len(value) > MAX_VALUE:
                    event[key] = clip(value)
                continue  # the common case, kept cheap (audit lines)
        event[key] = _clean(key, value)
    return event


def _encode_default(value: Any) -> Any:
    return str(value)


_json = msgspec.json.Encoder(enc_hook=_encode_default)


_FIRST = ("timestamp", "level", "event")


def render_json(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """One JSON object a line, time, level and event name first so lines read in order."""
    ordered = {key: event[key] for key in _FIRST if key in event}
    ordered.update(event)
    return _json.encode(ordered).decode("utf-8")


class _Writer(threading.Thread):
    """Drains the queue and writes lines to one or two streams (audit can go apart)."""

    def __init__(self, main: TextIO, audit: TextIO | None, audit_to_main: bool = False) -> None:
        super().__init__(name="log-writer", daemon=True)
        self.main = main
        self.audit = audit
        self.audit_to_main = audit_to_main and audit is not None
        self.stopping = threading.Event()
        self.reopening = threading.Event()
        self.lock = threading.Lock()  # one drain at a time (this thread, or `flush`)

    def run(self) -> None:
        wait = BATCH_WINDOW
        while True:
            stopping = self.stopping.wait(wait)
            if self.reopening.is_set():
                self.reopening.clear()
                self._reopen()
            wrote = self.drain()
            if stopping:
                self.drain()
                return
            wait = BATCH_WINDOW if wrote else min(wait * 2, IDLE_WINDOW)

    def _reopen(self) -> None:
        """Open file destinations again by name (logrotate moved the old file away); only this
        thread writes to them, so the swap needs no lock."""
        for attribute in ("main", "audit"):
            old = getattr(self, attribute)
            if old is None or old not in _files:
                continue  # stderr/stdout: nothing to reopen
            try:
                new = _open(old.name)
            except OSError as exc:  # keep writing to the old file rather than lose lines
                _BUFFER.append((False, f"log file {old.name} not reopened: {exc.strerror}"))
                continue
            setattr(self, attribute, new)
            _files.remove(old)
            old.close()

    def drain(self) -> bool:
        """Write everything buffered: one write and one flush per stream per batch."""
        with self.lock:
            return self._drain()

    def _drain(self) -> bool:
        main: list[str] = []
        audit: list[str] = []
        take = _BUFFER.popleft
        while True:
            try:
                is_audit, line = take()
            except IndexError:
                break
            if is_audit and self.audit is not None:
                audit.append(line)
                if self.audit_to_main:
                    main.append(line)
            else:
                main.append(line)
        if main:
            main.append("")
            self.main.write("\n".join(main))
            self.main.flush()
        if audit and self.audit is not None:
            audit.append("")
            self.audit.write("\n".join(audit))
            self.audit.flush()
        return bool(main or audit)


class QueueLogger:
    """A structlog logger whose every method enqueues the rendered line."""

    def __init__(self, name: str) -> None:
        self._put = _BUFFER.append
        self._audit = name == "audit"

    def msg(self, line: str) -> None:
        self._put((self._audit, line))

    debug = info = warning = warn = error = critical = exception = log = msg


def _factory(*args: Any) -> QueueLogger:
    return QueueLogger(args[0] if args else "")


class _StdlibBridge(logging.Handler):
    """Routes stdlib logging records through the same redaction and queue."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        fields: dict[str, Any] = {}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = type(record.exc_info[1]).__name__
        structlog.get_logger(record.name).log(record.levelno, message, **fields)


_writer: _Writer | None = None
_files: list[TextIO] = []
# The console renderer when lines go to a terminal: audit lines assembled as JSON by
# `emit_members` are rendered with it too, so a terminal reads one style.
_console: Any = None


def _open(dest: str | Path) -> TextIO:
    if dest == "stderr":
        return sys.stderr
    if dest == "stdout":
        return sys.stdout
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", encoding="utf-8")
    _files.append(handle)
    return handle


def configure(
    level: str = "info",
    fmt: str = "auto",
    destination: str | Path = "stderr",
    audit_destination: str | Path | None = None,
    *,
    audit_to_main: bool = False,
    journal: bool = False,
) -> None:
    """Set up logging once per process. Destinations: "stderr", "stdout" or a file path.
    `audit_to_main` also shows audit lines on the main stream (the CLI: staff see what their
    command recorded, and the audit file still gets it). `journal`: stderr is journald's
    stream, so lines that go there carry no timestamp (the journal adds its own) and start with
    their syslog priority (`<6>` info, `<4>` warning, ...), which journald reads as the level."""
    global _writer, _console
    stop()
    main = _open(destination)
    audit = None if audit_destination in (None, destination) else _open(audit_destination)
    _writer = _Writer(main, audit, audit_to_main)
    _writer.start()
    renderer = _renderer(fmt, main)
    _journal[0] = journal and main is sys.stderr
    _journal[1] = audit is not None
    _threshold[0] = _LEVELS[level]
    _console = None if renderer is render_json else renderer
    step = _prioritised[0] = Prioritised(renderer)
    structlog.configure(
        processors=[
            gate,
            structlog.stdlib.add_log_level,
            stamp,
            redact,
            structlog.processors.format_exc_info,
            step,
        ],
        # Every level reaches `gate`, which reads the level at call time: loggers are cached
        # on first use, so a level baked into their class could not change on reload. Calls
        # below the level (a few debug lines per connection) are dropped by the first step.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(max(_LEVELS[level], logging.INFO))


_threshold = [_LEVELS["info"]]  # the configured level; `set_level` changes it live


def gate(logger: Any, name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop a diagnostic below the configured level. Audit lines are records and always pass."""
    if _LEVELS.get(name, 40) < _threshold[0] and not getattr(logger, "_audit", False):
        raise structlog.DropEvent
    return event


def _renderer(fmt: str, main: TextIO) -> Any:
    """JSON, or readable key=value lines for `console` (and `auto` on a terminal)."""
    if fmt == "console" or (fmt == "auto" and main.isatty()):
        return structlog.dev.ConsoleRenderer(colors=False)
    return render_json


def set_format(fmt: str) -> None:
    """Change the line format of the running process (config reload). Loggers are cached with
    the processor chain, so the chain's last step keeps its identity and only its renderer is
    replaced: one attribute store, which a line being rendered on another thread sees either
    before or after, never half-made."""
    global _console
    writer, step = _writer, _prioritised[0]
    if writer is None or step is None:
        return
    renderer = _renderer(fmt, writer.main)
    _console = None if renderer is render_json else renderer
    step.renderer = renderer


def debugging() -> bool:
    """Whether debug lines are written now: a per-connection debug line is skipped before it
    is built (structlog would build and then drop it, a few microseconds each time)."""
    return _threshold[0] <= _LEVELS["debug"]


def set_level(level: str) -> None:
    """Change the log level of the running process (config reload)."""
    _threshold[0] = _LEVELS[level]
    logging.getLogger().setLevel(max(_LEVELS[level], logging.INFO))


# [stderr is the journal, audit lines have a stream of their own]; set by configure.
_journal = [False, False]
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _to_journal(logger: Any) -> bool:
    """Whether this logger's lines go to the journal (audit lines may go to their own file)."""
    return _journal[0] and not (_journal[1] and getattr(logger, "_audit", False))


def stamp(logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The line's time, except on the journal, which stamps every line itself."""
    if not _to_journal(logger):
        event["timestamp"] = timestamp()
    return event


class Prioritised:
    """The renderer, with the syslog priority prefix journald reads when the line goes there."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> Any:
        line = self.renderer(logger, name, event)
        if _to_journal(logger):
            return f"<{_PRIORITY.get(str(event.get('level')), 6)}>{line}"
        return line


# The chain's renderer step, kept so `set_format` can swap what it renders with.
_prioritised: list[Prioritised | None] = [None]


def reopen() -> None:
    """Reopen file destinations at the writer's next wake-up (SIGUSR1/SIGHUP after logrotate)."""
    if _writer is not None:
        _writer.reopening.set()


_second = [-1, ""]  # the formatted whole second (with its dot), reused for every line within it


def timestamp(now: float | None = None) -> str:
    """ISO 8601 UTC with microseconds, the same text structlog's TimeStamper writes, but the
    date and time are formatted once a second instead of once a line."""
    micros = time.time_ns() // 1000 if now is None else int(now * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
    # str() of 1_000_000 + fraction, first digit dropped: the zero-padded microseconds without
    # a format spec (once per line, and formatting with a spec costs twice as much)
    return f"{_second[1]}{str(1_000_000 + fraction)[1:]}Z"


# `emit_members`' whole second: (its digits, the line's start up to the fraction)
_line_second = ["", ""]


def emit_members(event: str, members: str, latency_ms: float) -> bool:
    """Queue one audit line whose fields are already JSON object members (`"k":v,...`, no
    braces), after the timestamp, level and event fields every line starts with and before a
    `latency_ms`. `event` must be a plain name (it is not escaped). False when logging is not
    configured."""
    if _writer is None:
        return False
    if _console is not None:  # a person is reading: the same style as every other line
        fields = msgspec.json.decode(f"{{{members}}}")
        line = _console(
            None,
            "info",
            {
                "timestamp": timestamp(),
                "level": "info",
                "event": event,
                **fields,
                "latency_ms": round(latency_ms, 3),
            },
        )
    elif _journal[0] and not _journal[1]:  # to the journal: no timestamp, a priority prefix
        line = f'<6>{{"level":"info","event":"{event}",{members},"latency_ms":{latency_ms:.3f}}}'
    else:
        # timestamp(), inlined: this is every audit line. The microseconds since the epoch as
        # digits: all but the last six are the whole second (its formatted start is kept, as
        # in `timestamp`), the last six the zero-padded fraction, with no divmod and no
        # format spec (`{:06d}` alone costs about 2,400 instructions).
        digits = str(time.time_ns() // 1000)
        whole = digits[:-6]
        if whole != _line_second[0]:
            _line_second[0] = whole
            _line_second[1] = time.strftime(
                '{"timestamp":"%Y-%m-%dT%H:%M:%S.', time.gmtime(int(whole))
            )
        line = (
            f'{_line_second[1]}{digits[-6:]}Z","level":"info","event":"{event}",'
            f'{members},"latency_ms":{latency_ms:.3f}}}'
        )
    _BUFFER.append((True, line))
    return True


def emit_audit(event: str, level: str, fields: dict[str, Any]) -> bool:
    """Queue one audit event line (`Audit.event`: a login, a PIN change, a block) as the
    structlog chain would write it as JSON to a file or stderr (time, level and event first,
    then `kind`, then `fields`, redacted and clipped by `redact`), without the chain's per-call
    machinery. False when the chain must write it (logging not configured, a console or the
    journal), and the caller logs it the usual way."""
    if _writer is None or _console is not None or _journal[0]:
        return False
    line: dict[str, Any] = {
        "timestamp": timestamp(),
        "level": level,
        "event": event,
        "kind": "audit",
        **fields,
    }
    _BUFFER.append((True, _json.encode(redact(None, level, line)).decode("utf-8")))
    return True


def audit_members(fields: dict[str, Any]) -> str:
    """The JSON object members `emit_audit` writes after the event name for `fields` (`"kind"`
    first, then the fields, redacted and clipped), without braces: for `emit_audit_members`.
    `fields` must not name `timestamp`, `level`, `event` or `kind`."""
    return _json.encode(redact(None, "info", {"kind": "audit", **fields})).decode("utf-8")[1:-1]


def emit_audit_members(event: str, level: str, members: str) -> bool:
    """`emit_audit` for fields already encoded by `audit_members` (a line whose fields repeat,
    e.g. a SIP2 terminal's login from its address): the same line, without building,
    redacting and encoding the fields again. `event` and `level` are plain names (not
    escaped). False when the chain must write it, as for `emit_audit`."""
    if _writer is None or _console is not None or _journal[0]:
        return False
    _BUFFER.append(
        (
            True,
            f'{{"timestamp":"{timestamp()}","level":"{level}","event":"{event}",{members}}}',
        )
    )
    return True


def configured() -> bool:
    """True once `configure` ran in this process (and `stop` did not follow)."""
    return _writer is not None


def flush() -> None:
    """Write every line queued so far before returning (the CLI, before it prints a line of its
    own to the same stream, so the two never interleave)."""
    if _writer is not None:
        _writer.drain()


def stop() -> None:
    """Write every queued line and stop the writer thread."""
    global _writer
    if _writer is not None:
        _writer.stopping.set()
        _writer.join(timeout=10)
        _writer = None
    while _files:
        _files.pop().close()
