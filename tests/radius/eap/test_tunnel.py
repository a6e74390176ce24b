"""The tunnel's TLS options in memory: `groups` limits the key exchange, `dh` is checked before
OpenSSL sees it, and a TTLS session key names a session across its resumption."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from OpenSSL import SSL
from OpenSSL._util import lib

from bridge.radius.eap.tunnel import Tunnel, server_context
from bridge.radius.packet import ProtocolError
from bridge.tls import generate_chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tunnel")
    paths = {n: d / f"{n}.pem" for n in ("ca", "ca-key", "server", "key")}
    generate_chain(paths["ca"], paths["ca-key"], paths["server"], paths["key"], ["radius"])
    return paths


def client_context(groups: bytes) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    assert lib.SSL_CTX_set1_curves_list(ctx._context, groups) == 1
    return ctx


def handshake(
    server: Tunnel,
    groups: bytes,
    session: SSL.Session | None = None,
    ctx: SSL.Context | None = None,
) -> SSL.Connection:
    """A pyOpenSSL client offering only `groups`, pumped against `server` until both are done
    (or OpenSSL gives up: the server's ProtocolError propagates)."""
    if ctx is None:
        ctx = client_context(groups)
    client = SSL.Connection(ctx, None)
    client.set_connect_state()
    if session is not None:
        client.set_session(session)
    for _ in range(6):
        with contextlib.suppress(SSL.WantReadError):
            client.do_handshake()
        try:
            data = client.bio_read(65536)
        except SSL.WantReadError:
            data = b""
        if data:
            out, _ = server.receive(data)
            if out:
                client.bio_write(out)
        if server.established:
            break
    return client


def test_groups_limit_the_key_exchange(chain: dict[str, Path]) -> None:
    """The client must also offer P-256 in TLS 1.2: the curve of the certificate's key."""
    ctx = server_context(chain["server"], chain["key"], chain["ca"], groups=("P-384",))
    tunnel = Tunnel(ctx)
    handshake(tunnel, b"P-384:P-256")
    assert tunnel.established
    with pytest.raises(ProtocolError, match="TLS"):
        handshake(Tunnel(ctx), b"P-256")


@pytest.mark.parametrize("groups", [("P-999",), ("X25519;P-256",), ("",)])
def test_bad_groups_are_value_errors(chain: dict[str, Path], groups: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"radius\.eap\.groups"):
        server_context(chain["server"], chain["key"], None, groups=groups)


def test_dh_must_be_dh_parameters_of_2048_bits(chain: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"radius\.eap\.dh: .* holds no DH|cannot load"):
        server_context(chain["server"], chain["key"], None, dh_params=chain["server"])
    with pytest.raises(ValueError, match=r"radius\.eap\.dh: cannot load"):
        server_context(chain["server"], chain["key"], None, dh_params=tmp_path / "none.pem")


def test_session_key_is_stable_across_resumption_and_unique_per_session(
    chain: dict[str, Path],
) -> None:
    ctx = server_context(chain["server"], chain["key"], chain["ca"], resumption=60)
    first = Tunnel(ctx)
    peer = client_context(b"P-256")
    client = handshake(first, b"P-256", ctx=peer)
    assert first.established and not first.resumed
    key = first.session_key()
    assert key is not None and len(key) == 32
    first.keep_session()
    again = Tunnel(ctx)
    handshake(again, b"P-256", client.get_session(), peer)
    assert again.established and again.resumed
    assert again.session_key() == key
    other = Tunnel(ctx)
    handshake(other, b"P-256")
    assert not other.resumed and other.session_key() not in (None, key)


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello", b"\x15\x03\x03\x00\x02\x02\x28"],
)
def test_failures_read_as_pyopenssl_connection_errors(chain: dict[str, Path], data: bytes) -> None:
    """The tunnel holds OpenSSL's SSL object itself; a peer's bad octets still give the reason
    text a pyOpenSSL Connection on the same context raises."""
    ctx = server_context(chain["server"], chain["key"], chain["ca"])
    reference = SSL.Connection(ctx, None)
    reference.set_accept_state()
    reference.bio_write(data)
    with pytest.raises(SSL.Error) as expected:
        reference.do_handshake()
    with pytest.raises(ProtocolError) as raised:
        Tunnel(ctx).receive(data)
    assert str(raised.value) == f"TLS: {expected.value.args[0][-1][-1]}"
    assert raised.value.kind == "TLS handshake failed"


@pytest.mark.parametrize("tls13", [False, True])
def test_msk_application_data_and_version_match_the_peer(
    chain: dict[str, Path], tls13: bool
) -> None:
    """The MSK is the peer's own export (RFC 5281 on 1.2, RFC 9427 on 1.3), and records the
    tunnel encrypts are the peer's plaintext, on both versions."""
    ctx = server_context(chain["server"], chain["key"], chain["ca"], "1.3" if tls13 else "1.2")
    peer = client_context(b"P-256")
    peer.set_max_proto_version(SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION)
    server = Tunnel(ctx)
    client = handshake(server, b"P-256", ctx=peer)
    with contextlib.suppress(SSL.WantReadError):
        client.do_handshake()  # TLS 1.3: the client's Finished
    with contextlib.suppress(SSL.WantReadError):
        server.receive(client.bio_read(65536))
    assert server.version == ("TLSv1.3" if tls13 else "TLSv1.2")
    if tls13:
        expected = client.export_keying_material(b"EXPORTER_EAP_TLS_Key_Material", 128, b"\x15")
    else:
        expected = client.export_keying_material(b"ttls keying material", 64)
    assert server.msk(21) == bytes(expected)[:64]
    client.bio_write(server.send(b"\x01inner" * 3000))  # more than one record
    received = b""
    with contextlib.suppress(SSL.WantReadError):
        while True:
            received += client.recv(65536)
    assert received == b"\x01inner" * 3000
    client.send(b"from the peer")
    _, plain = server.receive(client.bio_read(65536))
    assert plain == b"from the peer"
