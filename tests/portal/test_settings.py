"""`[portal]` and `[smtp]` parse strictly and check their cross-key rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError
from tests.portal.support import make_config


def test_defaults_and_secret_file(tmp_path: Path) -> None:
    (tmp_path / "smtp.pw").write_text("smtp-secret\n")
    config = make_config(
        tmp_path,
        """
[portal]
[smtp]
username = "bridge"
password_file = "smtp.pw"
security = "starttls"
""",
    )
    assert config.portal is not None and config.smtp is not None
    assert config.portal.reset_token_minutes == 30
    assert config.portal.policy.allow_expired and config.portal.policy.fines_limit is None
    assert config.smtp.password == "smtp-secret"
    assert not config.portal.secure


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[portal]\ncolour = 'red'", "portal.colour: unknown key"),
        ("[smtp]\nhostname = 'x'", "smtp.hostname: unknown key"),
        ("[portal]\nbase_url = 'http://library.example.org'", "portal.base_url: must use https"),
        ("[portal]\nbase_url = '/relative'", "portal.base_url: must be an absolute"),
        ("[portal]\nlisten = 'nowhere'", "portal.listen: bad listen address"),
        ("[portal]\ntls_cert = 'c.pem'", "portal.tls_cert: give both"),
        ("[portal]\ndefault_language = 'fr'", "portal.default_language"),
        ("[portal]\nreset_token_minutes = 0", "portal.reset_token_minutes"),
        ("[smtp]\nusername = 'u'", "smtp.username: give both"),
        (
            "[smtp]\nhost = 'mail.example.org'\nusername = 'u'\npassword = 'p'",
            "smtp.security: a login needs starttls",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as caught:
        make_config(tmp_path, extra)
    assert "'p'" not in str(caught.value)


def test_https_base_url_makes_cookies_secure(tmp_path: Path) -> None:
    config = make_config(tmp_path, "[portal]\nbase_url = 'https://pins.library.example.org'\n")
    assert config.portal is not None and config.portal.secure


def test_partial_portal_policy_keeps_portal_defaults(tmp_path: Path) -> None:
    config = make_config(tmp_path, "[portal]\n[portal.policy]\nallow_blocked = true\n")
    assert config.portal is not None
    policy = config.portal.policy.client_policy()
    assert policy.allow_blocked and policy.allow_expired and policy.fines_limit is None
