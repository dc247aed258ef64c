"""`multibot backtest` end to end through typer (on a local app: cli.py registers it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from multibot.backtest.command import register
from tests.backtest_support import (
    own_session,
    processes_of_session,
    strategy_running,
    write_binance_csv,
    write_bundled_csv,
)
from tests.support import eventually

RANGE = ["--interval", "1h", "--from", "2021-06-01", "--to", "2021-06-12"]
REPO = Path(__file__).resolve().parents[1]
SYMBOL_KEYS = {"data", "first_bar", "last_bar", "strategies", "stake", "order_type", "metrics",
               "orders", "position_at_end", "strategy_errors", "last_error", "warnings",
               "trades"}
METRIC_KEYS = {"bars", "capital", "final_equity", "return_pct", "max_drawdown_pct", "trades",
               "wins", "win_rate_pct", "sharpe", "exposure_pct", "buy_hold_return_pct", "fees"}
TRADE_KEYS = {"entry_time", "exit_time", "bars", "qty", "entry_price", "exit_price", "fees",
              "pnl", "return_pct"}


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def main() -> None:
        """multibot (test app)"""

    register(app)
    return app


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(_app(), ["backtest", *map(str, args)])


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    out = tmp_path_factory.mktemp("bt") / "out"
    result = run("BTCUSDT", "ETHUSDT", *RANGE, "-s", "sma_cross:fast=5,slow=20", "--out", out,
                 "--check-lookahead")
    return result, out


def test_prints_a_table_per_symbol_and_combined_and_the_paths(done: tuple[Result, Path]) -> None:
    result, out = done
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["symbol", "bars", "return", "%"]
    rule = "-" * len(lines[0])
    assert [line.split()[0] for line in lines[1:5]] == ["BTCUSDT", "ETHUSDT", rule, "combined"]
    assert f"report  {out / 'report.json'}" in result.stdout
    assert f"chart   {out / 'equity.png'}" in result.stdout
    assert "look-ahead check passed" in result.stdout


def test_the_png_is_written_and_not_empty(done: tuple[Result, Path]) -> None:
    png = done[1] / "equity.png"
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def test_report_schema(done: tuple[Result, Path]) -> None:
    report: dict[str, Any] = json.loads((done[1] / "report.json").read_text())
    assert set(report) == {"report_version", "parameters", "combined", "symbols",
                           "lookahead_check"}
    assert report["report_version"] == 1
    params = report["parameters"]
    assert params["symbols"] == ["BTCUSDT", "ETHUSDT"] and params["interval"] == "1h"
    assert (params["from"], params["to"]) == ("2021-06-01T00:00Z", "2021-06-12T23:59:59Z")
    assert params["fee_rate"] == "0.001" and params["slippage_bps"] == "2"
    assert set(report["combined"]) == METRIC_KEYS
    assert report["lookahead_check"] == {"passed": True, "problems": []}
    for symbol, entry in report["symbols"].items():
        assert set(entry) == SYMBOL_KEYS, symbol
        assert set(entry["metrics"]) == METRIC_KEYS
        assert entry["strategies"] == [{"name": "sma_cross", "params": {"fast": 5, "slow": 20}}]
        assert entry["metrics"]["bars"] == 288 and entry["first_bar"] == "2021-06-01T00:00Z"
        assert entry["trades"] and all(set(t) == TRADE_KEYS for t in entry["trades"])
        assert entry["metrics"]["trades"] == len(entry["trades"])
    combined, symbols = report["combined"], report["symbols"].values()
    assert combined["trades"] == sum(s["metrics"]["trades"] for s in symbols)
    assert combined["final_equity"] == pytest.approx(
        sum(s["metrics"]["final_equity"] for s in symbols))


def test_same_input_gives_a_byte_identical_report(done: tuple[Result, Path],
                                                  tmp_path: Path) -> None:
    again = run("BTCUSDT", "ETHUSDT", *RANGE, "-s", "sma_cross:fast=5,slow=20", "--out",
                tmp_path, "--check-lookahead")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "report.json").read_bytes() == (done[1] / "report.json").read_bytes()


def test_a_binance_csv_via_data(tmp_path: Path) -> None:
    closes = [100 + (i % 17) - (i % 5) * 1.5 for i in range(120)]
    data = write_binance_csv(tmp_path / "XYZUSDT-1h-2025-01.csv", closes, micros=True)
    result = run("XYZUSDT", "--data", data, "-s", "sma_cross:fast=3,slow=8", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["parameters"]["interval"] == "1h"
    assert report["symbols"]["XYZUSDT"]["metrics"]["bars"] == 120


@pytest.mark.parametrize(("args", "message"), [
    (["NOPEUSDT"], "unknown symbol NOPEUSDT: no bundled 1m data"),
    (["BTCUSDT", "--interval", "1h", "--from", "2025-13-01"], "--from '2025-13-01' is not a date"),
    (["BTCUSDT", "--interval", "1h", "--from", "2030-01-01"], "no BTCUSDT bars in 2030-01-01"),
    (["BTCUSDT", "--from", "2025-01-05", "--to", "2025-01-04"], "is after --to"),
    (["BTCUSDT", "--interval", "7m"], "no bundled data for interval '7m'"),
    (["BTCUSDT", "-s", "nope"], "unknown strategy 'nope'"),
    (["BTCUSDT", "--stake", "-5"], "must be a positive number"),
    (["BTCUSDT", "ETHUSDT", "--data", "{csv}"], "--data given 1 time(s) for 2 symbol(s)"),
    (["BTCUSDT", "--data", "{missing}"], "cannot read"),
    (["BTCUSDT", "--data", "{garbage}"], "unrecognised header"),
    (["BTCUSDT", "--data", "{narrow}"], "4 columns"),
    (["BTCUSDT", "--data", "{csv}", "--interval", "1m"], "bars are 1h apart, not 1m"),
])
def test_bad_input_is_exit_2_with_a_clear_error(tmp_path: Path, args: list[str],
                                                message: str) -> None:
    files = {
        "csv": write_bundled_csv(tmp_path / "k.csv", [1.0, 2.0, 3.0]),
        "missing": tmp_path / "missing.csv",
        "garbage": tmp_path / "garbage.csv",
        "narrow": tmp_path / "narrow.csv",
    }
    files["garbage"].write_text("hello,world\n1,2\n")
    files["narrow"].write_text("1735689600000,1,2,3\n")
    result = run(*(a.format(**files) for a in args), "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_the_command_module_imports_nothing_heavy() -> None:
    code = ("import sys, multibot.backtest.command; "
            "print(sorted(m for m in ('numpy', 'matplotlib', 'multibot.backtest.engine') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_strategy_that_kills_its_process_fails_that_run_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "exiter.py"
    path.write_text(
        "import os\n"
        "from strategies.base import Strategy\n\n\n"
        "class Exiter(Strategy):\n"
        "    name = 'exiter'\n\n"
        "    @property\n"
        "    def warmup(self):\n"
        "        return 0\n\n"
        "    def on_bar(self, bar):\n"
        "        os._exit(3)\n")
    result = run("BTCUSDT", *RANGE, "-s", f"{path}:Exiter", "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "error: backtest failed: BTCUSDT: the backtest process died (exit code 3" in (
        result.stderr)


def _cli(*args: str) -> contextlib.AbstractContextManager[subprocess.Popen[str]]:
    return own_session(sys.executable, "-m", "multibot.cli.app", *args, cwd=REPO)


def test_ctrl_c_stops_the_backtest_and_every_process_it_started(tmp_path: Path) -> None:
    path = strategy_running(tmp_path, "slow", "time.sleep(0.01)", "import time")
    with _cli("backtest", "BTCUSDT", "ETHUSDT", "-s", f"{path}:Test", "--interval", "1m",
              "--from", "2025-01-01", "--to", "2025-01-05") as cli:
        eventually(lambda: len(processes_of_session(cli.pid)) >= 4, timeout=60,
                   what="the CLI, its forkserver and a child running")
        os.killpg(cli.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        cli.wait(30)
        eventually(lambda: not processes_of_session(cli.pid), what="no process left")
    assert cli.returncode != 0


def test_a_rejected_command_leaves_no_process_behind() -> None:
    """The command starts the forkserver before it checks its input (to overlap their
    start-ups); a usage error must still leave no process."""
    with _cli("backtest", "BTCUSTD") as cli:
        _, err = cli.communicate(timeout=60)
        assert cli.returncode == 2 and "BTCUSTD" in err
        eventually(lambda: not processes_of_session(cli.pid), what="no process left")


def test_runs_from_a_directory_whose_packages_shadow_ours(tmp_path: Path) -> None:
    """Run from a directory with a `strategies` package and a `msgspec.py` of its own (a
    trading user's), the command and its children still import multibot's and the installed
    ones."""
    shadow = tmp_path / "strategies"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the wrong strategies package')\n")
    (tmp_path / "msgspec.py").write_text("raise ImportError('the wrong msgspec')\n")
    script = Path(sys.executable).parent / "multibot"
    if not script.exists():
        pytest.skip("no multibot script next to this interpreter")
    done = subprocess.run([str(script), "backtest", "BTCUSDT", "--from", "2025-01-01", "--to",
                           "2025-01-02", "--out", str(tmp_path / "out"), "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.json").exists()


def test_a_strategy_disabled_for_its_errors_fails_the_backtest(tmp_path: Path) -> None:
    """Exit 1 with a summary naming the symbol and strategy, after the report is written:
    the numbers count the disabled strategy as FLAT, so they are not the strategy's."""
    path = tmp_path / "raiser.py"
    path.write_text(
        "from strategies.base import Strategy\n\n\n"
        "class Raiser(Strategy):\n"
        "    name = 'raiser'\n\n"
        "    @property\n"
        "    def warmup(self):\n"
        "        return 0\n\n"
        "    def on_bar(self, bar):\n"
        "        raise ValueError('boom')\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "multibot.cli.app", "backtest", "BTCUSDT", *RANGE, "-q",
         "-s", f"{path}:Raiser", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: strategy disabled after 10 errors: BTCUSDT (Raiser)" in proc.stderr
    assert (out / "report.json").exists()  # what it did is still there to read
