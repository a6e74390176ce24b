from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Debian's chromium under Playwright and a real SMTP server (STARTTLS, AUTH): the PIN pages'
# browser-test fixtures, for the desk's browser tests too.
from tests.portal.test_browser import browser, smtp
from tests.staff.support import StaffEnv, open_staff_env

__all__ = ["browser", "env", "smtp"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[StaffEnv]:
    yield from open_staff_env(tmp_path)
