from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import FleetCli

# pytest-xdist's workers set COLUMNS=80 and LINES=24: the CLI a test runs would then fit its
# tables to 80 columns. A test that wants a terminal width sets COLUMNS itself.
for _size in ("COLUMNS", "LINES"):
    os.environ.pop(_size, None)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[FleetCli]:
    """A fleet home that is always torn down, even when the test fails."""
    cli = FleetCli(tmp_path / "home")
    try:
        yield cli
    finally:
        cli.cleanup()
