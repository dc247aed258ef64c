from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import FleetCli


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetCli]:
    """A fleet home that is always torn down, even when the test fails."""
    cli = FleetCli(tmp_path / "home")
    try:
        yield cli
    finally:
        cli.cleanup()
