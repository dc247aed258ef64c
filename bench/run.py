"""Run the benchmark suite and write BENCHMARKS.md.

    python bench/run.py                 # every scenario, 3 runs, writes BENCHMARKS.md
    python bench/run.py --smoke         # tiny sizes, 1 run, no file unless --out (the tests)
    python bench/run.py --only latency,fanout --runs 5 --out /tmp/b.md
    python bench/run.py --render bench/results.json   # the report again, from saved figures

Scenarios: latency, fanout, scale, backtest (bench/bench_backtest.py, when it exists). Each
run measures every scenario with its floor or peer, so every ratio compares figures taken
minutes apart at most; the table gives the median over the runs and their min-max spread.
Every process started is stopped at the end, pass or fail (and the exit code says if one
had to be killed). Exit code: 0 all measured, 1 a scenario failed to run (goals missed do
not fail the run: BENCHMARKS.md says by how much).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import backtest_figures, bench_fanout, bench_latency, bench_scale
from bench.common import REPO, Figure, Workspace, machine_facts
from bench.diagnosis import diagnose
from bench.document import Document, load, save, write_markdown
from bench.report import aggregate, console_table

SCENARIOS = ("latency", "fanout", "scale", "backtest")


def _benches(smoke: bool, notes: dict[str, str]) -> dict[str, Callable[[Workspace],
                                                                      list[Figure]]]:
    if smoke:
        latency = bench_latency.LatencyConfig(floor_trips=200, steps=40, warmup=10)
        fanout = bench_fanout.FanoutConfig(sizes=(1, 2), bars=2000)
        scale = bench_scale.ScaleConfig(sizes=(2, 4), settle_s=0.5, idle_s=1.0,
                                        status_reps=2, kills=2)
    else:
        latency, fanout = bench_latency.LatencyConfig(), bench_fanout.FanoutConfig()
        scale = bench_scale.ScaleConfig()

    def backtest(_ws: Workspace) -> list[Figure]:
        result = backtest_figures.run(smoke)
        if result is None:
            notes["backtest"] = f"{backtest_figures.SCRIPT.name} does not exist: not run."
            return []
        notes["backtest"] = result.output
        return result.figures

    return {
        "latency": lambda ws: bench_latency.run(ws, latency),
        "fanout": lambda ws: bench_fanout.run(ws, fanout),
        "scale": lambda ws: bench_scale.run(ws, scale, notes),
        "backtest": backtest,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--runs", type=int, default=None, help="repeats (default 3; smoke 1)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown report (default BENCHMARKS.md; smoke: none)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="parent of the temp dir for homes and sockets (default /tmp)")
    parser.add_argument("--profiles", choices=("misses", "always", "never"), default=None,
                        help="profile the missed goals (default), all, or none (smoke: all)")
    parser.add_argument("--save", type=Path, default=None,
                        help="where to keep every figure of every run as JSON (default: "
                        "bench/results.json, or next to --out)")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: profile and write the report from saved figures")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    runs = args.runs or (1 if args.smoke else 3)
    out = args.out or (None if args.smoke else REPO / "BENCHMARKS.md")
    profiles = args.profiles or ("always" if args.smoke else "misses")

    if args.render is not None:
        doc, results = load(args.render)
        chosen, runs = [], 0  # nothing is measured again
    else:
        doc = Document(facts=machine_facts(), started=datetime.datetime.now(datetime.UTC),
                       command="python bench/run.py " + " ".join(argv or sys.argv[1:]),
                       runs=runs)
        results = []
    began = time.monotonic()
    with Workspace(args.workdir) as ws:
        benches = _benches(args.smoke, doc.notes)
        try:
            for k in range(runs):
                figures: list[Figure] = []
                for name in chosen:
                    print(f"run {k + 1}/{runs}: {name} ...", flush=True)
                    started = time.monotonic()
                    try:
                        figures += benches[name](ws)
                    except Exception as exc:  # one broken scenario must not hide the others
                        doc.errors.append(f"run {k + 1}, {name}: {type(exc).__name__}: {exc}")
                        traceback.print_exc()
                    print(f"run {k + 1}/{runs}: {name} done in "
                          f"{time.monotonic() - started:.0f} s", flush=True)
                results.append(figures)
            doc.rows = aggregate(results)
            if profiles != "never":
                print("profiling ...", flush=True)
                doc.diagnosis = diagnose(doc.rows, ws, always=profiles == "always",
                                         smoke=args.smoke, notes=doc.notes)
        finally:
            killed = ws.close()
    if args.render is None:
        doc.killed, doc.minutes = killed, (time.monotonic() - began) / 60
    print()
    print(console_table([r for r in doc.rows if not r.detail]))
    for error in doc.errors:
        print(f"ERROR {error}", file=sys.stderr)
    if doc.killed:
        print(f"cleanup: {len(doc.killed)} leftover process(es) had to be killed: "
              f"{doc.killed}", file=sys.stderr)
    if out is not None:
        write_markdown(doc, out)
        print(f"\nwrote {out}")
        if args.render is None:
            saved = args.save or (out.with_suffix(".json") if args.out
                                  else REPO / "bench" / "results.json")
            save(doc, results, saved)
            print(f"wrote {saved}")
    return 1 if doc.errors else 0


if __name__ == "__main__":
    sys.exit(main())
