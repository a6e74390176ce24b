from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.staff.support import StaffEnv, open_staff_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser

    from tests.portal.support import SmtpServer


@pytest.fixture
def env(tmp_path: Path) -> Iterator[StaffEnv]:
    yield from open_staff_env(tmp_path)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    """A real SMTP server (STARTTLS, AUTH) for the desk's mail, for the browser tests."""
    from tests.portal.support import SmtpServer

    with SmtpServer(tls_dir=tmp_path) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium under Playwright, for the browser tests."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import require_tool
    from tests.portal.test_browser import CHROMIUM_ARGS

    chromium = require_tool("/usr/bin/chromium")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
