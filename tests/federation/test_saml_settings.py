"""`[saml]`: each service provider has exactly one metadata source, a URL is https://, and the
released attributes come from the known vocabulary; a bad entry stops the daemon at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.federation.saml_settings import SamlSettings, ServiceProvider
from tests.federation.support import sections
from tests.harness import Daemon
from tests.portal.support import free_port


def keys(settings: SamlSettings) -> list[str]:
    return [k for k, _ in settings.problems()]


def test_rules() -> None:
    def one(**kw: object) -> SamlSettings:
        return SamlSettings(scope="library.example.org", service_providers=[ServiceProvider(**kw)])  # type: ignore[arg-type]

    assert keys(one(metadata_file="sp.xml")) == []
    assert keys(one(metadata_url="https://fed.example.org/sp.xml")) == []
    assert keys(one()) == ["service_providers[0].metadata_file"]
    both = one(metadata_file="sp.xml", metadata_url="https://fed.example.org/sp.xml")
    assert keys(both) == ["service_providers[0].metadata_file"]
    assert keys(one(metadata_url="http://fed.example.org/sp.xml")) == [
        "service_providers[0].metadata_url"
    ]
    assert keys(one(metadata_file="sp.xml", attributes=["uid"])) == [
        "service_providers[0].attributes"
    ]
    assert keys(SamlSettings(scope="a@b")) == ["scope"]


def test_a_plain_http_metadata_url_stops_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "vendor-secret").write_text("unused\n")
    extra = """
[saml]
scope = "library.example.org"
[[saml.service_providers]]
metadata_url = "http://fed.example.org/sp.xml"
"""
    daemon = Daemon(tmp_path, sections(free_port()) + extra)
    with pytest.raises(RuntimeError, match=r"saml\.service_providers\[0\]\.metadata_url"):
        daemon.start()
    daemon.stop()
