"""The Makefile and .gitignore a new user meets first: `make help` lists every target, the
demo installs only what running needs, and the demos' homes are not offered to git."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def test_help_lists_every_documented_target() -> None:
    documented = re.findall(r"^([a-z][a-z-]*):.*#--", (ROOT / "Makefile").read_text(), re.M)
    assert "demo-binance" in documented
    listed = [line.split()[0] for line in make("help").splitlines() if line.strip()]
    assert listed == documented


@pytest.mark.parametrize("target", ["demo", "demo-binance"])
def test_demo_installs_no_dev_tools(target: str) -> None:
    # -B: every step as if nothing were installed yet; -n: print, do not run
    steps = make("-n", "-B", target)
    assert "pip install" in steps
    assert "[dev]" not in steps


def test_demo_homes_are_ignored_by_git() -> None:
    for home in (".demo/x", ".demo-testnet/x"):
        subprocess.run(["git", "check-ignore", "-q", home], cwd=ROOT, check=True, timeout=10)
