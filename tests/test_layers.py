"""The house's import rules (pyproject.toml [tool.importlinter]) hold: arrows only go down.

The contracts: the face over the daemon over the worker over the strategies over the shared
kernel; strategies see only Bar and Signal; no exchange SDK or data-frame library below the
daemon; no import cycles. ``make lint`` runs the same check as ``lint-imports``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout
