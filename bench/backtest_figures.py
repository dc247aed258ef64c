"""Backtest throughput figures from bench/bench_backtest.py (another module's benchmark).

It runs as a subprocess when the file exists; its printed table is parsed leniently (the
multibot rows and the backtesting.py row of each section) and its whole output is kept for
BENCHMARKS.md, so a change of its format loses figures, never the output.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

from bench.common import PYTHON, REPO, BenchError, Figure, Goal, bench_env

SCRIPT = REPO / "bench" / "bench_backtest.py"
SCENARIO = "backtest bars/s vs backtesting.py"
REPEATS = 5  # interleaved runs of each side per run of the suite
_SECTION = re.compile(r"^(?P<title>\S.*): (?P<bars>[\d,]+) bars$")
_ROW = re.compile(r"^(?P<name>(?:multibot|backtesting\.py)[^\d]*?(?:\d+\.\d+\.\d+)?)\s{2,}"
                  r"(?P<rate>[\d,]+)\s")


@dataclass
class BacktestRun:
    figures: list[Figure] = field(default_factory=list)
    output: str = ""
    returncode: int = 0


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse(output: str) -> list[Figure]:
    """Per section: each multibot row against that section's backtesting.py row."""
    sections: list[tuple[str, dict[str, float]]] = []
    for line in output.splitlines():
        if (m := _SECTION.match(line.strip())) is not None:
            sections.append((m["title"], {}))
        elif sections and (m := _ROW.match(line.strip())) is not None:
            sections[-1][1][m["name"].strip()] = float(m["rate"].replace(",", ""))
    figures = []
    for index, (title, rows) in enumerate(sections):
        peer = next(((name, rate) for name, rate in rows.items()
                     if name.startswith("backtesting.py")), None)
        if peer is None:
            continue
        for name, rate in rows.items():
            if not name.startswith("multibot"):
                continue
            goal = (Goal(">= 5x backtesting.py", "ratio", ">=", 5.0)
                    if "process per symbol" in name and index == 0 else None)
            figures.append(Figure(f"backtest.{index}.{_slug(name)}", SCENARIO,
                                  f"{title}: {name}", "bars/s", rate, peer[1], peer[0], goal))
    return figures


def run(smoke: bool) -> BacktestRun | None:
    """None when bench/bench_backtest.py does not exist (yet)."""
    if not SCRIPT.exists():
        return None
    # Each invocation is one run of the suite; within it, the script's own interleaved repeats
    # give a median per side (a single timing of each side swings by 20% on a shared machine).
    args = [PYTHON, "-m", "bench.bench_backtest", "--runs", "1" if smoke else str(REPEATS)]
    args += ["--no-multi"] if smoke else []
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=1800,
                              stdin=subprocess.DEVNULL, env=bench_env(), cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{SCRIPT.name} did not finish within {exc.timeout:g} s") from None
    result = BacktestRun(output=proc.stdout.strip(), returncode=proc.returncode)
    if proc.returncode not in (0, 1):  # 1 = it ran, but the trade counts differ
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise BenchError(f"{SCRIPT.name} failed ({proc.returncode}): {tail}")
    result.figures = parse(proc.stdout)
    same = "MISMATCH" not in proc.stdout and proc.returncode == 0
    result.figures.append(Figure("backtest.same_trades", SCENARIO,
                                 "same trade count on both sides (1 = yes)", "", float(same),
                                 goal=Goal("same trade count", "value", ">=", 1)))
    if len(result.figures) == 1:
        raise BenchError(f"no figures found in the output of {SCRIPT.name}:\n{result.output}")
    return result
