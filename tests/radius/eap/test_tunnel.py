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
