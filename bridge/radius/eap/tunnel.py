"""The TLS server end of the tunnel, in memory (pyOpenSSL memory BIOs; no sockets).

The standard library's ssl cannot export keying material, which EAP needs for its MSK, so this
uses pyca's pyOpenSSL: OpenSSL does all of TLS, this module only moves octets between the
conversation and OpenSSL. TLS 1.2, and TLS 1.3 when configured (RFC 9427 key derivation;
FreeRADIUS 3.2 also defaults to 1.2 for TTLS, and wpa_supplicant keeps 1.3 off for TTLS unless
`tls_disable_tlsv1_3=0`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi  # pyOpenSSL's own binding: groups, session reuse, I/O
from OpenSSL._util import lib as _lib
from OpenSSL._util import no_zero_allocator as _no_zero

from bridge.radius.packet import ProtocolError
from bridge.tls import dh_prime_bits

TTLS_LABEL: Final = b"ttls keying material"  # RFC 5281 section 8, TLS 1.2
TLS13_LABEL: Final = b"EXPORTER_EAP_TLS_Key_Material"  # RFC 9427 section 2.1, TLS 1.3
PEAP_LABEL: Final = b"client EAP encryption"  # PEAPv0 (as RFC 5216), TLS 1.2
LABELS: Final = {21: TTLS_LABEL, 25: PEAP_LABEL}
READ_CHUNK: Final = 16384


def server_context(
    certificate: Path,
    key: Path,
    ca: Path | None,
    max_version: str = "1.2",
    resumption: int = 0,
    dh_params: Path | None = None,
    groups: Sequence[str] = (),
) -> SSL.Context:
    """One context per daemon: the certificate chain (the CA appended, so supplicants that
    were given only the root can build the path).

    `resumption` > 0 keeps sessions that many seconds in OpenSSL's in-memory server cache, by
    session ID (wpa_supplicant turns TLS session tickets off for EAP). OpenSSL bounds the cache
    (20,480 sessions by default, the oldest evicted). Only conversations that ended in an
    Access-Accept stay resumable (`Tunnel.keep_session`); OpenSSL drops the others when their
    connection is freed. A resumed PEAP tunnel still runs EAP-GTC; a resumed TTLS tunnel skips
    the inner PAP, so the front end accepts it only for a card it remembers authorising
    (`resumption.Remembered`). 0: every conversation is a full handshake.

    `dh_params`: a PEM file of Diffie-Hellman parameters, which enables the TLS 1.2 DHE suites
    (OpenSSL offers none without). `groups`: the key-exchange groups, most preferred first,
    for TLS 1.2 ECDHE and TLS 1.3 ("X25519", "P-256", "ffdhe2048", ...); empty: OpenSSL's
    defaults. Either failing to load is a `ValueError` naming its setting, reported at start."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION if max_version == "1.3" else SSL.TLS1_2_VERSION)
    # Stateful sessions only (in TLS 1.3 the tickets then name cached sessions).
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    if resumption > 0:
        ctx.set_session_id(b"patron-bridge-eap")
        ctx.set_timeout(resumption)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    else:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate_chain_file(str(certificate))
    ctx.use_privatekey_file(str(key))
    ctx.check_privatekey()
    if dh_params is not None:
        _check_dh(dh_params)
        ctx.load_tmp_dh(str(dh_params))
    if groups:
        _set_groups(ctx, groups)
    if ca is not None:
        for cert in x509.load_pem_x509_certificates(ca.read_bytes()):
            ctx.add_extra_chain_cert(cert)
    return ctx


def _check_dh(path: Path) -> None:
    """Refuse a DH file that is not PEM DH parameters of at least 2048 bits (OpenSSL's own
    loader would only fail an assertion)."""
    try:
        size = dh_prime_bits(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"radius.eap.dh: cannot load {str(path)!r}: {exc}") from None
    if size < 2048:
        raise ValueError(f"radius.eap.dh: {str(path)!r} has a {size}-bit prime; 2048 at least")


def _set_groups(ctx: SSL.Context, groups: Sequence[str]) -> None:
    """SSL_CTX_set1_groups_list (its older name, curves_list, is what pyOpenSSL binds); pyOpenSSL
    itself can only set one ECDH curve."""
    if any(not name or not name.replace("-", "").replace("_", "").isalnum() for name in groups):
        raise ValueError(f"radius.eap.groups: not a group name in {list(groups)!r}")
    joined = ":".join(groups).encode("ascii")
    if _lib.SSL_CTX_set1_curves_list(ctx._context, joined) != 1:
        raise ValueError(f"radius.eap.groups: OpenSSL does not know {':'.join(groups)}")


# OpenSSL's functions and constants bound once: a conversation calls a dozen of them.
_SSL_new = _lib.SSL_new
_SSL_free = _lib.SSL_free
_BIO_new = _lib.BIO_new
_BIO_write = _lib.BIO_write
_BIO_read = _lib.BIO_read
_BIO_get_mem_data = _lib.BIO_get_mem_data
_SSL_do_handshake = _lib.SSL_do_handshake
_SSL_get_error = _lib.SSL_get_error
_SSL_read = _lib.SSL_read
_SSL_version = _lib.SSL_version
_SSL_export_keying_material = _lib.SSL_export_keying_material
_SSL_get_session = _lib.SSL_get_session
_SSL_SESSION_get_master_key = _lib.SSL_SESSION_get_master_key
_SSL_session_reused = _lib.SSL_session_reused
_NULL = _ffi.NULL
_buffer = _ffi.buffer
_WANT_READ = _lib.SSL_ERROR_WANT_READ
_READ_DONE = (_lib.SSL_ERROR_WANT_READ, _lib.SSL_ERROR_ZERO_RETURN)
_TLS1_2 = _lib.TLS1_2_VERSION
_TLS1_3 = _lib.TLS1_3_VERSION
_CLOSED = _lib.SSL_SENT_SHUTDOWN | _lib.SSL_RECEIVED_SHUTDOWN
_MEMORY = _lib.BIO_s_mem()  # a static method table: the same pointer for every BIO
_SESSION_KEY_PREFIX: Final = b"patron-bridge eap session"


class _Raiser:
    """What pyOpenSSL's error translation reads of a Connection (its Context's callback
    helpers): `Connection._raise_ssl_error` turns an OpenSSL result into the same `SSL.Error`
    (reason texts such as "tlsv1 alert unknown ca") a Connection would raise."""

    __slots__ = ("_context",)

    def __init__(self, context: SSL.Context) -> None:
        self._context = context


class Tunnel:
    """One TLS server connection fed with the peer's TLS messages.

    The SSL object and its two memory BIOs are held directly (OpenSSL through pyOpenSSL's
    own binding), not through `SSL.Connection`: a Connection's constructor alone was about
    120 bytecodes and ten C calls a conversation (a weak reverse mapping for callbacks this
    context never sets, a mode OpenSSL has on by default), and each of its accessors checks
    and allocates again. Errors still go through pyOpenSSL's translation (`_raise`)."""

    __slots__ = ("_context", "_from_ssl", "_into_ssl", "_ssl", "established")

    def __init__(self, ctx: SSL.Context) -> None:
        ssl = _SSL_new(ctx._context)
        if ssl == _NULL:
            raise MemoryError("SSL_new failed")
        self._ssl = _ffi.gc(ssl, _SSL_free)  # frees the BIOs too
        self._context = ctx
        into, out = _BIO_new(_MEMORY), _BIO_new(_MEMORY)
        if into == _NULL or out == _NULL:
            raise MemoryError("BIO_new failed")
        _lib.SSL_set_bio(ssl, into, out)
        self._into_ssl, self._from_ssl = into, out
        _lib.SSL_set_accept_state(ssl)
        self.established = False

    def _raise(self, result: int) -> None:
        SSL.Connection._raise_ssl_error(_Raiser(self._context), self._ssl, result)  # type: ignore[arg-type]

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed the peer's TLS octets; (octets to send back, decrypted application data).

        "Wants more input" is a return value here, where pyOpenSSL's `do_handshake`/`recv`/
        `bio_read` raise an exception for it (two or three raised and caught per round).
        Every other result goes through pyOpenSSL's own error translation, so failures read
        exactly as they would from a Connection."""
        ssl = self._ssl
        if data and _BIO_write(self._into_ssl, data, len(data)) != len(data):
            raise ProtocolError("TLS: memory BIO refused the peer's octets", "TLS handshake failed")
        try:
            if not self.established:
                result = _SSL_do_handshake(ssl)
                if result == 1:
                    self.established = True
                elif _SSL_get_error(ssl, result) != _WANT_READ:
                    self._raise(result)
            plain = b""
            if self.established:
                plain = self._read(ssl)
            return self._drain(), plain
        except SSL.Error as exc:
            raise ProtocolError(f"TLS: {_reason(exc)}", "TLS handshake failed") from None

    def _read(self, ssl: Any) -> bytes:
        """Every decrypted octet OpenSSL can give now (SSL_read until it wants input)."""
        out = b""
        buf = _no_zero("char[]", READ_CHUNK)
        while True:
            result = _SSL_read(ssl, buf, READ_CHUNK)
            if result > 0:
                out += _buffer(buf, result)[:]
                continue
            if _SSL_get_error(ssl, result) not in _READ_DONE:
                self._raise(result)
            return out

    def send(self, data: bytes) -> bytes:
        """Encrypt application data; the TLS records to send."""
        ssl = self._ssl
        try:
            with _ffi.from_buffer(data) as view:
                sent = 0
                while sent < len(data):
                    result = _lib.SSL_write(ssl, view + sent, len(data) - sent)
                    if result <= 0:
                        self._raise(result)
                    sent += result
        except SSL.Error as exc:
            raise ProtocolError(f"TLS: {_reason(exc)}", "TLS write failed") from None
        return self._drain()

    def keep_session(self) -> None:
        """Mark the connection cleanly closed so OpenSSL keeps its session for resumption
        (a connection freed mid-conversation takes its session out of the cache)."""
        _lib.SSL_set_shutdown(self._ssl, _CLOSED)

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed a cached session (abbreviated: no certificate)."""
        return bool(_SSL_session_reused(self._ssl))

    def session_key(self) -> bytes | None:
        """A handle naming this TLS session, the same when it is resumed: SHA-256 of the TLS 1.2
        master secret (secret, unique per full handshake, unchanged by an abbreviated one).
        None on TLS 1.3, whose resumption derives new secrets from a ticket: a TLS 1.3 TTLS
        session is never resumed (`Conversation` refuses the resumption it cannot match)."""
        ssl = self._ssl
        if _SSL_version(ssl) != _TLS1_2:
            return None
        session = _SSL_get_session(ssl)
        if session == _NULL:
            return None
        buf = _no_zero("unsigned char[]", 48)  # a TLS 1.2 master secret is 48 octets
        size = _SSL_SESSION_get_master_key(session, buf, 48)
        if size <= 0:
            return None
        return hashlib.sha256(_SESSION_KEY_PREFIX + _buffer(buf, size)[:]).digest()

    def alert(self) -> bytes:
        """Any alert OpenSSL queued (sent to the peer before failing)."""
        return self._drain()

    def msk(self, method: int) -> bytes:
        """The 64-octet MSK: the first half of the method's 128 octets of keying material.
        TLS 1.2: RFC 5281 section 8 (TTLS) or "client EAP encryption" (PEAPv0); the TLS PRF
        is a stream, so exporting 64 octets gives exactly those (the EMSK half is never used;
        not deriving it saves a third to a half of the PRF's HMACs). TLS 1.3: RFC 9427 section
        2.1, the common label with the method's Type-Code as context; its exporter binds the
        length, so the 128 octets are derived and cut."""
        ssl = self._ssl
        if _SSL_version(ssl) == _TLS1_3:  # (context, its length, use it)
            size, label, context = 128, TLS13_LABEL, (bytes([method]), 1, 1)
        else:
            size, label, context = 64, LABELS[method], (_NULL, 0, 0)
        out = _no_zero("unsigned char[]", size)
        if _SSL_export_keying_material(ssl, out, size, label, len(label), *context) != 1:
            raise ProtocolError("TLS: keying material export failed", "TLS key export failed")
        msk: bytes = _buffer(out, 64)[:]
        return msk

    @property
    def version(self) -> str:
        return str(_ffi.string(_lib.SSL_get_version(self._ssl)).decode("ascii"))

    def _drain(self) -> bytes:
        """Everything OpenSSL wrote for the peer, in one read of the memory BIO's length."""
        bio = self._from_ssl
        size = _BIO_get_mem_data(bio, _NULL)
        if size <= 0:
            return b""
        buf = _no_zero("char[]", size)
        out: bytes = _buffer(buf, _BIO_read(bio, buf, size))[:]
        return out


def _reason(exc: SSL.Error) -> str:
    """OpenSSL's reason text (e.g. "tlsv1 alert unknown ca"), bounded."""
    try:
        errors = exc.args[0]
        if errors and isinstance(errors, list):
            return str(errors[-1][-1])[:120]
    except (IndexError, TypeError):
        pass
    return type(exc).__name__
