"""The metadata schedule on its own, in-process with the real pieces (pysaml2, xmlsec1, an HTTPS
metadata server): a URL is refetched when its refresh time comes (seconds here, minutes in the
config), and an SP whose served copy passes its own validUntil is dropped at that moment, then
comes back when a good copy is served again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bridge.federation.saml_metadata import MetadataSource
from bridge.federation.saml_server import IdentityProvider, read_or_create_identity
from bridge.federation.saml_settings import SamlSettings, ServiceProvider
from tests.federation.mellon import Sp
from tests.federation.metadata_server import MetadataServer, Signer


async def until(condition: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the schedule did not act"
        await asyncio.sleep(0.05)


def test_refresh_schedule_and_validity(tmp_path: Path) -> None:
    server = MetadataServer(tmp_path)
    signer = Signer(tmp_path, "federation")
    a = Sp(path="/a").metadata("https://sp.example.org", signer.cert)
    b = Sp(path="/b").metadata("https://sp.example.org", signer.cert)
    entity_a = "https://sp.example.org/a/mellon/metadata"
    entity_b = "https://sp.example.org/b/mellon/metadata"
    server.body = signer.sign(a).encode()
    read_or_create_identity(tmp_path / "idp-key.pem", tmp_path / "idp-cert.pem", "127.0.0.1")
    sp = ServiceProvider(metadata_url=server.url)
    settings = SamlSettings(scope="library.example.org", service_providers=[sp])
    source = MetadataSource(
        0, tmp_path / "cache.xml", server.url, server.cert, signer.cert, refresh_seconds=0.5
    )

    async def scenario() -> None:
        idp = await asyncio.to_thread(
            IdentityProvider.build,
            settings,
            "http://127.0.0.1:9",
            tmp_path / "idp-key.pem",
            tmp_path / "idp-cert.pem",
            [source],
        )
        assert list(idp.current.sps) == [entity_a]
        idp.start_refreshing()
        try:
            server.body = signer.sign(b).encode()  # the federation publishes a change
            await until(lambda: list(idp.current.sps) == [entity_b])
            server.body = signer.sign(a, valid_seconds=2).encode()
            await until(lambda: list(idp.current.sps) == [entity_a])
            server.body = None  # the URL fails from now on; the copy in use runs out
            await until(lambda: idp.current.sps == {}, seconds=60)
            assert idp.current.expires is None
            server.body = signer.sign(a).encode()
            await until(lambda: list(idp.current.sps) == [entity_a])
        finally:
            await idp.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
