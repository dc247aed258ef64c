"""The README's "Writing a strategy" example is real: copied out of the README into a file,
it runs through `multibot backtest` (the real entry point), trades, raises nothing, and
passes the look-ahead check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Writing a strategy\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_strategy_backtests(tmp_path: Path) -> None:
    strategy = tmp_path / "momo.py"
    strategy.write_text(readme_example())
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "multibot.cli.app", "backtest", "BTCUSDT", "--interval", "1h",
         "--from", "2021-06-01", "--to", "2021-06-12", "-s", f"{strategy}:Momentum:lookback=10",
         "--out", str(out), "--check-lookahead"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    btc = report["symbols"]["BTCUSDT"]
    assert btc["strategies"] == [{"name": f"{strategy}:Momentum", "params": {"lookback": 10}}]
    assert btc["metrics"]["trades"] > 0 and not btc["strategy_errors"]
    assert report["lookahead_check"]["passed"]
    refused = subprocess.run(
        [sys.executable, "-m", "multibot.cli.app", "backtest", "BTCUSDT",
         "-s", f"{strategy}:Momentum:lookback=0", "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "lookback must be at least 1" in refused.stderr
