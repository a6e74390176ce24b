"""The listener: port 0 reports the bound port, HTTPS when configured, clean close."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx
import pytest

from bridge.app import open_core
from bridge.config import ConfigError
from bridge.portal.server import start
from bridge.services import Services
from bridge.tls import generate_self_signed
from tests.portal.support import make_config


def run_portal(tmp: Path, extra: str, *, verify: ssl.SSLContext | bool = True) -> list[str]:
    config = make_config(tmp, extra)

    async def main() -> list[str]:
        core = await open_core(config)
        services = Services(config, core.authenticator, core.audit)
        assert config.portal is not None
        listener = await start(config.portal, services)
        try:
            (address,) = listener.addresses
            scheme = "https" if config.portal.tls_cert else "http"
            async with httpx.AsyncClient(base_url=f"{scheme}://{address}", verify=verify) as c:
                page = await c.get("/login")
                assert page.status_code == 200
                assert "Sign in" in page.text
                assert "server" not in page.headers
            assert len(core.authenticator.on_invalidate) == 1
        finally:
            await listener.aclose()
            await core.aclose()
        assert core.authenticator.on_invalidate == []
        return listener.addresses

    return asyncio.run(main())


def test_port_zero_reports_the_bound_port(tmp_path: Path) -> None:
    (address,) = run_portal(tmp_path, "[portal]\nlisten = '127.0.0.1:0'\n")
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0


def test_https_with_configured_certificate(tmp_path: Path) -> None:
    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    trust = ssl.create_default_context(cafile=tmp_path / "cert.pem")
    run_portal(
        tmp_path,
        """
[portal]
listen = "127.0.0.1:0"
base_url = "https://127.0.0.1"
tls_cert = "cert.pem"
tls_key = "key.pem"
""",
        verify=trust,
    )


def test_missing_logo_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"portal\.logo_file"):
        run_portal(tmp_path, "[portal]\nlisten = '127.0.0.1:0'\nlogo_file = 'nope.png'\n")


def test_logo_served_from_config(tmp_path: Path) -> None:
    (tmp_path / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    config = make_config(tmp_path, "[portal]\nlisten = '127.0.0.1:0'\nlogo_file = 'logo.svg'\n")

    async def main() -> None:
        core = await open_core(config)
        assert config.portal is not None
        listener = await start(config.portal, Services(config, core.authenticator, core.audit))
        try:
            async with httpx.AsyncClient(base_url=f"http://{listener.addresses[0]}") as c:
                assert 'src="/logo"' in (await c.get("/login")).text
                logo = await c.get("/logo")
                assert logo.headers["content-type"] == "image/svg+xml"
        finally:
            await listener.aclose()
            await core.aclose()

    asyncio.run(main())
