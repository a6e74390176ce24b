"""`[metrics]` HTTPS keys: both or neither, refused with one line naming the section."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, loads

BASE = '[store]\nplugin = "sqlite"\npath = "p.db"\n[metrics]\nlisten = "127.0.0.1:9108"\n'


def test_tls_pair_is_both_or_neither() -> None:
    config = loads(BASE + 'tls_cert = "c.pem"\ntls_key = "k.pem"\n')
    assert config.metrics is not None and config.metrics.tls_key == "k.pem"
    assert loads(BASE).metrics is not None
    with pytest.raises(ConfigError, match="metrics: tls_cert and tls_key go together"):
        loads(BASE + 'tls_cert = "c.pem"\n')
