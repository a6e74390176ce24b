"""One SIP2 connection's protocol state, pure: login, error detection, resends, replays.

    session = Session(accounts, source="10.1.2.3", options=SessionOptions(...))
    action = session.receive(frame, client_terminator)
    # Reply(data): write it (and close when `close`); Dispatch(message): ask the core, then
    # data = session.answer(message, response); Close(reason): drop the connection.

Everything a SIP2 conversation requires apart from the core's answer lives here, so the server
stays a socket loop: which account is logged in (and with which wire dialect), whether this
message carried AY/AZ (the answer mirrors it), the last response (97 replays it), the last
checksummed request (an identical resend, e.g. after a lost reply, replays the answer instead of
counting a second PIN failure), 96 for a bad checksum or an unreadable message, and the
three-strikes rule for logins.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Final
from zlib import adler32

from bridge.core.patron import ClientPolicy
from bridge.core.secret import Secret
from bridge.sip2.codec import (
    _ADLER_EXACT,
    _HEX_PAIRS,
    RESEND,
    RESPONSE_CODE,
    Charset,
    ChecksumError,
    Message,
    Prepared,
    ProtocolError,
    Request,
    decode,
    encode,
    encode_rendered,
    read_login,
    read_request,
    render,
    template,
)
from bridge.sip2.messages import LoginRequest, LoginResponse
from bridge.sip2.settings import Sip2Account

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Account:
    """A configured SIP login, ready for use: networks parsed, policy resolved."""

    settings: Sip2Account
    policy: ClientPolicy
    networks: tuple[Network, ...]
    terminator: bytes
    charset: Charset
    required: bool  # error_detection = "required"
    # source -> allowed, remembered: a self-check or a discovery layer logs in from the same
    # few addresses on every connection, and parsing the address costs more than the rest of
    # the login (a table of its own per account: hashing the networks for a shared cache key
    # runs Python code per network on every login)
    _allowed: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    #: `settings.login`, as a field: read twice per cached PIN check (a property costs a call)
    login: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "login", self.settings.login)

    @classmethod
    def from_settings(cls, settings: Sip2Account, policy: ClientPolicy) -> Account:
        return cls(
            settings=settings,
            policy=policy,
            networks=tuple(ipaddress.ip_network(n, strict=False) for n in settings.networks),
            terminator=b"\r\n" if settings.terminator == "CRLF" else b"\r",
            charset=settings.charset,
            required=settings.error_detection == "required",
        )

    def allows(self, source: str) -> bool:
        known = self._allowed.get(source)
        if known is None:
            if len(self._allowed) >= ALLOWED_KEPT:
                self._allowed.clear()
            known = self._allowed[source] = _allows(self.networks, source)
        return known


#: Source addresses whose network check each account remembers (cleared when full).
ALLOWED_KEPT = 4096


def _allows(networks: tuple[Network, ...], source: str) -> bool:
    """Whether the source address is in one of the networks (it depends on nothing else)."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


class Accounts:
    """The SIP login table. `check` compares every entry in constant time, so response timing
    says nothing about which logins exist."""

    def __init__(self, accounts: list[Account]) -> None:
        # each with its successful `LoginCheck`, built once (it is never changed): one fewer
        # object per session's login
        self._accounts = [
            (a, a.login.encode("utf-8"), a.settings.password.encode("utf-8"), _accepted(a))
            for a in accounts
        ]

    def check(self, login: str, password: Secret, source: str) -> Account | None:
        return self.verify(login, password, source).account

    def verify(self, login: str, password: Secret, source: str) -> LoginCheck:
        """The account, or why there is none. Every entry is compared (constant time) before
        the reason is worked out, so the answer's timing still says nothing."""
        given_login = login.encode("utf-8")
        given_password = password.reveal()
        found: LoginCheck | None = None
        named: Account | None = None
        for account, name, secret, accepted in self._accounts:
            name_ok = hmac.compare_digest(name, given_login)
            secret_ok = hmac.compare_digest(secret, given_password)
            if name_ok and named is None:
                named = account
            if name_ok and secret_ok and found is None:
                found = accepted
        if named is None:
            return LoginCheck(None, UNKNOWN_LOGIN, "")
        if found is None:
            return LoginCheck(None, WRONG_PASSWORD, named.login)
        assert found.account is not None
        if not found.account.allows(source):
            return LoginCheck(None, WRONG_NETWORK, found.login)
        return found

    def __len__(self) -> int:
        return len(self._accounts)


#: Why a 93 failed (the `reason` of `sip2_login_failed`; never the password, never the login
#: as sent unless it names a configured account).
UNKNOWN_LOGIN = "unknown login"
WRONG_PASSWORD = "wrong password"  # noqa: S105 - a log reason, not a password
WRONG_NETWORK = "source not in the account's networks"
ALGORITHM = "unsupported uid/pwd algorithm (only 0, plain text)"


@dataclass(slots=True)  # one per login: not frozen (a frozen __init__ costs three times as much)
class LoginCheck:
    """The outcome of a login: the account, or the reason and (when it names a configured
    account) the login to log."""

    account: Account | None
    reason: str
    login: str


def _accepted(account: Account) -> LoginCheck:
    return LoginCheck(account, "", account.login)


@dataclass(frozen=True, slots=True)
class SessionOptions:
    sc_status_before_login: bool = False
    login_attempts: int = 3


@dataclass(slots=True)  # one per login or refusal: not frozen (cheaper to build); never changed
class Reply:
    """Bytes to write now. `event` names what happened for the log; `close` ends the
    connection after writing."""

    data: bytes
    event: str = ""
    close: bool = False
    login: str = ""  # the configured login a login event was for (never the CN as sent)
    reason: str = ""  # why a login failed


@dataclass(slots=True)  # one per request: not frozen (cheaper to build); never changed
class Dispatch:
    """A request only the core can answer; call `Session.answer` with the response."""

    message: Message


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


Action = Reply | Dispatch | Close | None

#: The AY digit and the AZ tag of a checksummed answer, by sequence number.
_AY_AZ: Final = tuple(f"AY{digit}AZ" for digit in range(10))

#: The two 94s as text, rendered once (every login answers one of them).
_LOGIN_OK: Final = Prepared(render(template(LoginResponse(True).to_message()), {}))
_LOGIN_REFUSED: Final = render(template(LoginResponse(False).to_message()), {})
#: The 941 as sent, as a `Reply` (never changed), per (AY digit or None, AZ or not,
#: terminator, configured login): `_login` fills it (a few dozen per account at most).
_LOGIN_OK_SENT: Final[dict[tuple[int | None, bool, bytes, str], Reply]] = {}


class Session:
    __slots__ = (
        "_last_request",
        "_last_response",
        "_pending",
        "account",
        "accounts",
        "login_failures",
        "options",
        "source",
    )

    def __init__(self, accounts: Accounts, source: str, options: SessionOptions) -> None:
        self.accounts = accounts
        self.source = source
        self.options = options
        self.account: Account | None = None
        self.login_failures = 0
        self._last_request = b""
        self._last_response = b""
        self._pending = b""

    @property
    def charset(self) -> Charset:
        return self.account.charset if self.account is not None else "cp850"

    def receive(self, frame: bytes, client_terminator: bytes = b"\r") -> Action:
        """Decide what one frame means. Never raises for bad input."""
        account = self.account
        if account is not None:
            terminator, charset = account.terminator, account.charset
        else:
            terminator, charset = client_terminator, "cp850"
        if frame[:2] == b"93":  # a login of the usual shape: no `Message` (one per session)
            login = read_login(frame)
            if login is not None:
                checksummed = login[5]
                if account is not None and account.required and not checksummed:
                    return Reply(RESEND + terminator, "unchecked_message")
                if checksummed and frame == self._last_request and self._last_response:
                    return Reply(self._last_response, "duplicate_replayed")
                uid, pwd, name, password, sequence, _ = login
                return self._login(
                    name, password, uid, pwd, sequence, checksummed, frame, terminator
                )
        try:
            message = decode(frame, charset=charset)
        except ChecksumError:
            return Reply(RESEND + terminator, "bad_checksum")
        except ProtocolError:
            return Reply(RESEND + terminator, "unreadable_message")
        code = message.code
        if account is not None and account.required and not message.checksummed:
            return Reply(RESEND + terminator, "unchecked_message")
        if code in ("97", "96"):
            if self._last_response:
                return Reply(self._last_response, "resend")
            return Reply(RESEND + terminator, "resend_nothing_sent")
        if message.checksummed and frame == self._last_request and self._last_response:
            return Reply(self._last_response, "duplicate_replayed")
        if code not in RESPONSE_CODE:
            return Reply(RESEND + terminator, "not_a_request")
        if code == "93":
            request = LoginRequest.from_message(message)
            return self._login(
                request.login,
                request.password,
                request.uid_algorithm,
                request.pwd_algorithm,
                message.sequence,
                message.checksummed,
                frame,
                terminator,
            )
        if account is None and not (code == "99" and self.options.sc_status_before_login):
            return Close("message before login")
        self._pending = frame
        return Dispatch(message)

    def request(self, frame: bytes) -> Request | None:
        """A logged-in terminal's plain 23/63/35, read straight off the frame (`read_request`),
        when `receive` would dispatch it as it is; None means: call `receive`.

        The same checks in the same order as `receive` for these codes: a frame with anything
        unusual, an unchecked message on an account that requires checksums, or a duplicate
        to replay goes the general way. Answer with `answer_request`."""
        account = self.account
        if account is None:
            return None
        request = read_request(frame)
        if request is None:
            return None
        if request[2]:
            if frame == self._last_request and self._last_response:
                return None
        elif account.required:
            return None
        return request

    def answer_request(self, request: Request, frame: bytes, response: Prepared) -> bytes:
        """`answer` for a request from `request`."""
        sequence, checksummed = request[1], request[2]
        account = self.account
        text = response.text
        if account is None or sequence is None or not checksummed or not text.isascii():
            self._pending = frame
            return self._answer(sequence, checksummed, response)
        # what `encode_rendered` does for the usual case (ASCII, AY and AZ), inline: this is
        # every cached PIN check's answer
        data = (text + _AY_AZ[sequence % 10]).encode("ascii")
        # `_checksum_bytes`, inline too (a call costs as much as the sum)
        value = (1 - adler32(data) if len(data) <= _ADLER_EXACT else -sum(data)) & 0xFFFF
        data += _HEX_PAIRS[value >> 8] + _HEX_PAIRS[value & 0xFF] + account.terminator
        self._last_response = data
        self._last_request = frame
        self._pending = b""
        return data

    def answer(self, request: Message, response: Message | Prepared) -> bytes:
        """Encode a response mirroring the request's error detection; remember it for 97 and
        for duplicate replay."""
        return self._answer(request.sequence, request.checksummed, response)

    def _answer(
        self, sequence: int | None, checksummed: bool, response: Message | Prepared
    ) -> bytes:
        account = self.account
        if account is not None:
            terminator, charset = account.terminator, account.charset
        else:
            terminator, charset = b"\r", "cp850"
        if type(response) is Prepared:
            data = encode_rendered(
                response.text,
                sequence=sequence,
                checksum=checksummed,
                charset=charset,
                terminator=terminator,
            )
        else:
            assert isinstance(response, Message)
            data = encode(
                response,
                sequence=sequence,
                checksum=checksummed,
                charset=charset,
                terminator=terminator,
            )
        # remembered for a 97 and for replaying a duplicate of a checksummed request
        self._last_response = data
        self._last_request = self._pending if checksummed else b""
        self._pending = b""
        return data

    def _login(
        self,
        login: str,
        password: Secret,
        uid_algorithm: str,
        pwd_algorithm: str,
        sequence: int | None,
        checksummed: bool,
        frame: bytes,
        terminator: bytes,
    ) -> Reply:
        check = self.accounts.verify(login, password, self.source)
        account = check.account
        plain = uid_algorithm in ("0", " ") and pwd_algorithm in ("0", " ")
        if account is None or not plain:
            self.account = None  # a failed re-login logs the terminal out
            self.login_failures += 1
            data = encode_rendered(
                _LOGIN_REFUSED,
                sequence=sequence,
                checksum=checksummed,
                terminator=terminator,
            )
            close = self.login_failures >= self.options.login_attempts
            # The CN as sent is logged only when it names a configured account: in a mangled
            # 93 (a lost `|`) it can hold the password (`CNselfcheckCOsecret`).
            reason = check.reason if account is None else ALGORITHM
            return Reply(data, "login_failed", close=close, login=check.login, reason=reason)
        self.account = account
        self.login_failures = 0
        # `_answer(sequence, checksummed, _LOGIN_OK)`, its bytes kept per trailer and
        # terminator (a few dozen at most): every session's login answers one of them
        key = (sequence, checksummed, account.terminator, account.login)
        reply = _LOGIN_OK_SENT.get(key)
        if reply is None:
            sent = encode_rendered(
                _LOGIN_OK.text, sequence=sequence, checksum=checksummed, terminator=key[2]
            )
            reply = _LOGIN_OK_SENT[key] = Reply(sent, "login", login=account.login)
        self._last_response = reply.data
        self._last_request = frame if checksummed else b""
        self._pending = b""
        return reply

    def resend(self, client_terminator: bytes = b"\r") -> bytes:
        """96 for a request that decoded but whose content could not be acted on."""
        account = self.account
        return RESEND + (account.terminator if account is not None else client_terminator)
