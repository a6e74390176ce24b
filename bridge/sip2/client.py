"""The client side of a SIP2 conversation, pure: what a store that asks an ILS over SIP2 needs.

    client = ClientSession(error_detection=True)
    sock.sendall(client.request(LoginRequest("bridge", Secret(pw)).to_message()))
    for frame in framer.feed(sock.recv(65536)):
        result = client.receive(frame)
        if isinstance(result, Resend):      # bad checksum from the ILS, or its 96
            sock.sendall(result.data)
        else:
            answer = LoginResponse.from_message(result)

It numbers requests 0-9 in AY and checksums them (when error detection is on), checks that an
answer is the response to the request in flight (right code, same AY), asks the ILS to resend
(97) when an answer's checksum is wrong, and re-sends the last request when the ILS answers 96,
in the spec's form (AZ but no AY). After `max_retries` resends in a row it gives up with
`ProtocolError`, so a caller can drop the connection. No I/O and no clock: the caller owns the
socket and its timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.sip2.codec import (
    ACS_RESEND,
    RESPONSE_CODE,
    Charset,
    ChecksumError,
    Message,
    ProtocolError,
    decode,
    encode,
)


@dataclass(frozen=True, slots=True)
class Resend:
    """Bytes to send now instead of getting an answer (97, or our last request again)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class _Pending:
    message: Message
    sequence: int | None


class ClientSession:
    __slots__ = (
        "_next",
        "_pending",
        "_retries",
        "charset",
        "error_detection",
        "max_retries",
        "terminator",
    )

    def __init__(
        self,
        *,
        error_detection: bool = True,
        charset: Charset = "cp850",
        terminator: bytes = b"\r",
        max_retries: int = 3,
    ) -> None:
        self.error_detection = error_detection
        self.charset: Charset = charset
        self.terminator = terminator
        self.max_retries = max_retries
        self._next = 0
        self._pending: _Pending | None = None
        self._retries = 0

    @property
    def waiting(self) -> bool:
        """Whether a request is in flight (SIP2 has one at a time per connection)."""
        return self._pending is not None

    def request(self, message: Message) -> bytes:
        """Encode a request to send; it becomes the one in flight."""
        if message.code not in RESPONSE_CODE or message.code == "97":
            raise ProtocolError(f"message {message.code} is not a request")
        if self._pending is not None:
            raise ProtocolError("a request is already in flight")
        sequence: int | None = None
        if self.error_detection:
            sequence = self._next
            self._next = (self._next + 1) % 10
        self._pending = _Pending(message, sequence)
        self._retries = 0
        return encode(
            message,
            sequence=sequence,
            checksum=self.error_detection,
            charset=self.charset,
            terminator=self.terminator,
        )

    def receive(self, frame: bytes) -> Message | Resend:
        """The answer to the request in flight, or what to send to get it."""
        pending = self._pending
        if pending is None:
            raise ProtocolError("an answer arrived with no request in flight")
        try:
            answer = decode(frame, charset=self.charset)
        except ChecksumError:
            return self._retry(ACS_RESEND + self.terminator)
        if answer.code == "96":  # the ILS could not read our request: send it again, no AY
            return self._retry(
                encode(
                    pending.message,
                    checksum=True,
                    charset=self.charset,
                    terminator=self.terminator,
                )
            )
        expected = RESPONSE_CODE[pending.message.code]
        if answer.code != expected:
            raise ProtocolError(f"expected message {expected}, got {answer.code}")
        if (
            pending.sequence is not None
            and answer.sequence is not None
            and answer.sequence != pending.sequence
        ):
            raise ProtocolError("answer for another request (sequence number differs)")
        self._pending = None
        self._retries = 0
        return answer

    def _retry(self, data: bytes) -> Resend:
        self._retries += 1
        if self._retries > self.max_retries:
            self._pending = None
            raise ProtocolError("too many resends")
        return Resend(data)
