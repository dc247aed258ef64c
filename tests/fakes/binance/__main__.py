"""Run the fake by hand: ``python -m tests.fakes.binance --port 0 --api-key K --api-secret S``.

Prints the REST and stream URLs, then serves until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from tests.fakes.binance.server import FakeBinance


def _balance(text: str) -> tuple[str, str]:
    asset, sep, amount = text.partition("=")
    if not sep or not asset or not amount:
        raise argparse.ArgumentTypeError(f"expected ASSET=AMOUNT, got {text!r}")
    return asset.upper(), amount


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.binance",
                                     description="A local fake Binance spot server.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--api-secret", default="test-secret")
    parser.add_argument("--balance", type=_balance, action="append", default=[],
                        metavar="ASSET=AMOUNT", help="repeatable; default USDT=10000")
    parser.add_argument("--symbol", action="append", dest="symbols", metavar="SYMBOL",
                        help="repeatable; default every bundled symbol")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick-s", type=float, default=0.1)
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    balances = dict(args.balance) if args.balance else {"USDT": "10000"}
    with FakeBinance(api_key=args.api_key, api_secret=args.api_secret, balances=balances,
                     symbols=args.symbols, seed=args.seed, tick_s=args.tick_s) as fake:
        print(f"REST    {fake.rest_url}", flush=True)
        print(f"streams {fake.stream_url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
