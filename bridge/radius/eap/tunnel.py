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


class Tunnel:
    """One TLS server connection fed with the peer's TLS messages."""

    __slots__ = ("_conn", "established")

    def __init__(self, ctx: SSL.Context) -> None:
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_accept_state()
        self.established = False

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed the peer's TLS octets; (octets to send back, decrypted application data).

        OpenSSL is driven through pyOpenSSL's own binding (its `Connection` keeps the SSL and
        the two memory BIOs): "wants more input" is a return value here, where pyOpenSSL's
        `do_handshake`/`recv`/`bio_read` raise an exception for it (two or three raised and
        caught per round). Every other result goes through pyOpenSSL's own error translation,
        so failures read exactly as before."""
        conn = self._conn
        ssl = conn._ssl
        if data and _lib.BIO_write(conn._into_ssl, data, len(data)) != len(data):
            raise ProtocolError("TLS: memory BIO refused the peer's octets", "TLS handshake failed")
        try:
            if not self.established:
                result = _lib.SSL_do_handshake(ssl)
                if result == 1:
                    self.established = True
                elif _lib.SSL_get_error(ssl, result) != _lib.SSL_ERROR_WANT_READ:
                    conn._raise_ssl_error(ssl, result)
            plain = b""
            if self.established:
                plain = self._read(conn, ssl)
            return self._drain(), plain
        except SSL.Error as exc:
            raise ProtocolError(f"TLS: {_reason(exc)}", "TLS handshake failed") from None

    @staticmethod
    def _read(conn: SSL.Connection, ssl: Any) -> bytes:
        """Every decrypted octet OpenSSL can give now (SSL_read until it wants input)."""
        out = b""
        buf = _no_zero("char[]", READ_CHUNK)
        while True:
            result = _lib.SSL_read(ssl, buf, READ_CHUNK)
            if result > 0:
                out += _ffi.buffer(buf, result)[:]
                continue
            error = _lib.SSL_get_error(ssl, result)
            if error not in (_lib.SSL_ERROR_WANT_READ, _lib.SSL_ERROR_ZERO_RETURN):
                conn._raise_ssl_error(ssl, result)
            return out

    def send(self, data: bytes) -> bytes:
        """Encrypt application data; the TLS records to send."""
        try:
            self._conn.sendall(data)
        except SSL.Error as exc:
            raise ProtocolError(f"TLS: {_reason(exc)}", "TLS write failed") from None
        return self._drain()

    def keep_session(self) -> None:
        """Mark the connection cleanly closed so OpenSSL keeps its session for resumption
        (a connection freed mid-conversation takes its session out of the cache)."""
        self._conn.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed a cached session (abbreviated: no certificate)."""
        return bool(_lib.SSL_session_reused(self._conn._ssl))

    def session_key(self) -> bytes | None:
        """A handle naming this TLS session, the same when it is resumed: SHA-256 of the TLS 1.2
        master secret (secret, unique per full handshake, unchanged by an abbreviated one).
        None on TLS 1.3, whose resumption derives new secrets from a ticket: a TLS 1.3 TTLS
        session is never resumed (`Conversation` refuses the resumption it cannot match)."""
        if self._conn.get_protocol_version() != SSL.TLS1_2_VERSION:
            return None
        master = self._conn.master_key()
        return hashlib.sha256(b"patron-bridge eap session" + master).digest() if master else None

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
        conn = self._conn
        if conn.get_protocol_version() == SSL.TLS1_3_VERSION:
            context = bytes([method])
            return bytes(conn.export_keying_material(TLS13_LABEL, 128, context))[:64]
        return bytes(conn.export_keying_material(LABELS[method], 64))

    @property
    def version(self) -> str:
        return str(self._conn.get_protocol_version_name())

    def _drain(self) -> bytes:
        """Everything OpenSSL wrote for the peer, in one read of the memory BIO's length."""
        bio = self._conn._from_ssl
        size = _lib.BIO_get_mem_data(bio, _ffi.NULL)
        if size <= 0:
            return b""
        buf = _no_zero("char[]", size)
        out: bytes = _ffi.buffer(buf, _lib.BIO_read(bio, buf, size))[:]
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
