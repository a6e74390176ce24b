from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.portal.support import Env, open_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from open_env(tmp_path)
