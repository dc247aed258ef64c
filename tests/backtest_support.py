"""Helpers for the backtest tests: kline files in both formats, strategy files, and the
processes a backtest leaves (or must not leave) behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01T00:00Z


def kline_rows(closes: list[float], start: int = T0, step: int = HOUR
               ) -> list[tuple[int, float, float, float, float, float]]:
    """(open_time, open, high, low, close, volume): open = previous close, wicks 1% out."""
    rows = []
    for i, close in enumerate(closes):
        open_ = closes[i - 1] if i else close
        rows.append((start + i * step, open_, max(open_, close) * 1.01,
                     min(open_, close) * 0.99, close, 10.0 + i))
    return rows


def write_bundled_csv(path: Path, closes: list[float], step: int = HOUR) -> Path:
    lines = ["open_time,open,high,low,close,volume"]
    lines += [",".join(repr(v) for v in row) for row in kline_rows(closes, step=step)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_binance_csv(path: Path, closes: list[float], *, micros: bool = False,
                      step: int = HOUR) -> Path:
    """Binance's data.binance.vision kline file: 12 columns, no header, times in ms (or us)."""
    scale = 1000 if micros else 1
    lines = []
    for t, o, h, lo, c, v in kline_rows(closes, step=step):
        close_time = t + step - 1
        lines.append(",".join([
            str(t * scale), f"{o:.8f}", f"{h:.8f}", f"{lo:.8f}", f"{c:.8f}", f"{v:.8f}",
            str(close_time * scale), f"{v * c:.8f}", "42", f"{v / 2:.8f}", f"{v * c / 2:.8f}",
            "0",
        ]))
    path.write_text("\n".join(lines) + "\n")
    return path


def strategy_file(directory: Path, name: str, body: str) -> Path:
    """A strategy module ``name``.py holding ``body`` (dedented) after the common imports."""
    head = (
        "from multibot.market.bar import Bar, Signal\n"
        "from strategies.base import Strategy\n\n\n"
    )
    path = directory / f"{name}.py"
    path.write_text(head + textwrap.dedent(body))
    return path


def strategy_running(directory: Path, module: str, on_bar: str, imports: str = "") -> Path:
    """``module``.py with a strategy ``Test`` (no warm-up) whose on_bar runs ``on_bar``."""
    return strategy_file(directory, module, f"""\
{imports}

class Test(Strategy):
    name = {module!r}

    @property
    def warmup(self):
        return 0

    def on_bar(self, bar):
        {on_bar}
""")


def processes_of_session(sid: int) -> list[int]:
    """The live (not zombie) processes of session ``sid``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            session = os.getsid(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue  # gone meanwhile
        if session == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


@contextlib.contextmanager
def own_session(*argv: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``argv`` in a session of its own; whatever of the session is still running at the
    end is killed."""
    process = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield process
    finally:
        for pid in processes_of_session(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


BUY_SELL = """\
class BuySell(Strategy):
    '''LONG on the 2nd bar, FLAT on the 4th: one round trip with known numbers.'''

    name = "buy_sell"

    def __init__(self, params=None):
        super().__init__(params)
        self.seen = 0

    @property
    def warmup(self):
        return 0

    def on_bar(self, bar: Bar) -> Signal | None:
        self.seen += 1
        return {2: Signal.LONG, 4: Signal.FLAT}.get(self.seen)
"""

LEAKY = """\
class Leaky(Strategy):
    '''The bug under test: per-symbol state in a mutable CLASS attribute.'''

    name = "leaky"
    seen: list[float] = []  # shared by every instance in a process

    @property
    def warmup(self):
        return 0

    def on_bar(self, bar: Bar) -> Signal | None:
        self.seen.append(bar.close)
        return Signal.LONG if len(self.seen) % 7 < 3 else Signal.FLAT
"""

PEEKER = """\
NEXT: Bar | None = None  # the leak: whoever sets this hands the strategy the next bar


class Peeker(Strategy):
    '''Long exactly when the next bar closes higher: perfect, and impossible honestly.'''

    name = "peeker"

    @property
    def warmup(self):
        return 0

    def on_bar(self, bar: Bar) -> Signal | None:
        upcoming = NEXT
        if upcoming is None:
            return Signal.FLAT
        return Signal.LONG if upcoming.close > bar.close else Signal.FLAT
"""

RECORDER = """\
SEEN: list[Bar] = []
CALLS: list[tuple[type, ...]] = []


class Recorder(Strategy):
    name = "recorder"

    @property
    def warmup(self):
        return 0

    def on_bar(self, *args, **kwargs) -> Signal | None:
        CALLS.append(tuple(type(a) for a in args) + tuple(type(v) for v in kwargs.values()))
        SEEN.append(args[0])
        return None
"""
