"""`[oidc]`: each cross-key rule, and secrets from *_file like every other section."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, loads
from bridge.federation.settings import OidcClient, OidcSettings

STORE = '[store]\nplugin = "sqlite"\npath = "p.db"\n'


def settings(**kw: object) -> OidcSettings:
    return OidcSettings(**kw)  # type: ignore[arg-type]


def keys(found: list[tuple[str, str]]) -> list[str]:
    return [k for k, _ in found]


def test_issuer_rules() -> None:
    assert settings(issuer="https://id.library.org").problems() == []
    assert settings(issuer="http://127.0.0.1:8081").problems() == []
    assert keys(settings(issuer="http://id.library.org").problems()) == ["issuer"]
    assert keys(settings(issuer="https://id.library.org/").problems()) == ["issuer"]
    assert keys(settings(issuer="id.library.org").problems()) == ["issuer"]
    assert keys(settings(issuer="https://x.org", listen="nope").problems()) == ["listen"]


def test_client_rules() -> None:
    good = OidcClient(client_id="a", redirect_uris=["https://a.org/cb"])
    dup = settings(issuer="https://x.org", clients=[good, good])
    assert keys(dup.problems()) == ["clients[1].client_id"]
    bad_uri = OidcClient(client_id="b", redirect_uris=["/relative"])
    assert keys(settings(issuer="https://x.org", clients=[bad_uri]).problems()) == [
        "clients[0].redirect_uris"
    ]
    no_openid = OidcClient(client_id="c", redirect_uris=["https://c.org"], scopes=["profile"])
    assert keys(settings(issuer="https://x.org", clients=[no_openid]).problems()) == [
        "clients[0].scopes"
    ]
    assert good.public and good.sector_id == "a.org"


def test_loaded_with_secret_file(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("top-secret\n")
    text = (
        STORE
        + """
[oidc]
issuer = "https://id.library.org"
[[oidc.clients]]
client_id = "v"
secret_file = "s"
redirect_uris = ["https://v.org/cb"]
"""
    )
    config = loads(text, base_dir=tmp_path)
    assert config.oidc is not None and config.oidc.clients[0].secret == "top-secret"


def test_bad_issuer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"oidc\.issuer"):
        loads(STORE + '[oidc]\nissuer = "http://id.library.org"\n', base_dir=tmp_path)


def test_consent_keys(tmp_path: Path) -> None:
    text = (
        STORE
        + """
[oidc]
issuer = "https://id.library.org"
consent_days = 30
[[oidc.clients]]
client_id = "v"
redirect_uris = ["https://v.org/cb"]
consent = true
"""
    )
    config = loads(text, base_dir=tmp_path)
    assert config.oidc is not None and config.oidc.consent_days == 30
    assert config.oidc.clients[0].consent
    assert not OidcClient(client_id="a", redirect_uris=["https://a.org/cb"]).consent
    with pytest.raises(ConfigError, match=r"consent_days"):
        loads(text.replace("consent_days = 30", "consent_days = 0"), base_dir=tmp_path)
