"""The connection limits of every TCP listener are config keys, checked at start: a wrong value
stops the start with one line naming the file and the key."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, loads

STORE = '[store]\nplugin = "sqlite"\n'


def test_defaults() -> None:
    config = loads(STORE + "[sip2]\n[ldap]\n[portal]\n", source="limits.toml")
    assert config.sip2 is not None and config.ldap is not None and config.portal is not None
    assert config.ldap.max_connections_per_source == 256  # EZproxy: every login, one address
    assert (config.ldap.bind_timeout, config.ldap.pdu_timeout) == (30.0, 10.0)
    assert (config.ldap.max_tls_handshakes, config.ldap.tls_handshake_timeout) == (128, 10.0)
    assert (config.sip2.max_connections, config.sip2.message_timeout) == (2048, 30.0)
    assert config.portal.max_connections_per_source == 128
    assert (config.portal.request_timeout, config.portal.keep_alive_timeout) == (20.0, 5)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ldap]\nmax_connections_per_source = 0", "ldap.max_connections_per_source"),
        ("[ldap]\nbind_timeout = 0", "ldap.bind_timeout"),
        ("[ldap]\npdu_timeout = -1", "ldap.pdu_timeout"),
        ("[ldap]\nmax_tls_handshakes = 0", "ldap.max_tls_handshakes"),
        ("[ldap]\ntls_handshake_timeout = 1000", "ldap.tls_handshake_timeout"),
        ("[sip2]\nmax_connections = 0", "sip2.max_connections"),
        ("[sip2]\nmessage_timeout = -1", "sip2.message_timeout"),
        ("[sip2]\nmax_tls_handshakes = 'many'", "sip2.max_tls_handshakes"),
        ("[portal]\nmax_connections_per_source = 0", "portal.max_connections_per_source"),
        ("[portal]\nrequest_timeout = 0", "portal.request_timeout"),
        ("[portal]\nkeep_alive_timeout = 0.5", "portal.keep_alive_timeout"),
        ("[portal]\nmax_header_bytes = 100", "portal.max_header_bytes"),
        ("[portal]\ntrusted_proxies = ['not-an-address']", "portal.trusted_proxies"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^limits\.toml: {key}: "):
        loads(STORE + text + "\n", source="limits.toml")
