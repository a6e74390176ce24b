"""`[sip2]` config: strict keys, secrets from files and the environment, cross-key rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import ConfigError, loads

BASE = '[store]\nplugin = "sqlite"\n'


def sip2(text: str, tmp: Path | None = None) -> object:
    return loads(BASE + text, base_dir=tmp).sip2


def test_defaults_and_account_options() -> None:
    s = sip2(
        '[sip2]\n[[sip2.accounts]]\nlogin = "sc"\npassword = "x-secret"\ncharset = "utf-8"\n'
        'terminator = "CRLF"\nerror_detection = "required"\nwrong_pin_as_unknown = true\n'
        "[sip2.accounts.policy]\nallow_expired = true\n"
    )
    assert s is not None
    account = s.accounts[0]  # type: ignore[attr-defined]
    assert account.charset == "utf-8" and account.terminator == "CRLF"
    assert account.policy.allow_expired is True
    assert s.listen == ["127.0.0.1:6001"]  # type: ignore[attr-defined]


def test_password_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sip.pw").write_text("from-file-secret\n")
    monkeypatch.setenv("SIP_TEST_PW", "from-env-secret")
    s = sip2(
        '[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword_file = "sip.pw"\n'
        '[[sip2.accounts]]\nlogin = "b"\npassword_env = "SIP_TEST_PW"\n',
        tmp_path,
    )
    accounts = s.accounts  # type: ignore[attr-defined]
    assert accounts[0].password == "from-file-secret"
    assert accounts[1].password == "from-env-secret"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[sip2]\nbogus = 1\n", "sip2.bogus"),
        ('[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword = "p"\nextra = 1\n', "extra"),
        ('[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword = "p"\nnetworks = ["x"]\n', "network"),
        ('[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword = ""\n', "password"),
        ('[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword = "p"\ncharset = "latin1"\n', "charset"),
        ('[sip2]\ntls_listen = ["127.0.0.1:0"]\n', "tls_cert"),
        ('[sip2]\nlisten = ["nope"]\n', "sip2.listen[0]"),
        (
            '[sip2]\n[[sip2.accounts]]\nlogin = "a"\npassword = "p"\n'
            '[[sip2.accounts]]\nlogin = "a"\npassword = "q"\n',
            "share a login",
        ),
    ],
)
def test_errors_name_the_key_and_never_the_secret(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sip2(text)
    assert where in str(caught.value)
    assert '"q"' not in str(caught.value)
