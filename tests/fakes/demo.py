"""`make demo-binance`: three symbols trading in testnet mode against the local Binance server.

No keys and no network: the fake runs in this process on 127.0.0.1 and the orchestrator, with
the real python-binance client, talks to it exactly as it would to Binance's testnet.
Ctrl-C stops the fleet in order, then the server.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tests.fakes.binance import FakeBinance

KEY, SECRET = "demo-key", "demo-secret"


def main() -> int:
    parser = argparse.ArgumentParser(prog="multibot-demo-binance")
    parser.add_argument("--home", default=".demo-testnet")
    parser.add_argument("symbols", nargs="*", default=["BTCUSDT", "ETHUSDT", "XRPUSDT"])
    args = parser.parse_args()
    with FakeBinance(api_key=KEY, api_secret=SECRET, balances={"USDT": "10000"},
                     tick_s=0.1, volatility=0.001) as fake:
        env = dict(os.environ, MULTIBOT_BINANCE_REST_URL=fake.rest_url,
                   MULTIBOT_BINANCE_STREAM_URL=fake.stream_url,
                   MULTIBOT_BINANCE_TESTNET_API_KEY=KEY,
                   MULTIBOT_BINANCE_TESTNET_API_SECRET=SECRET)
        print(f"local Binance-protocol server on {fake.rest_url}", file=sys.stderr)
        command = [sys.executable, "-m", "multibot.cli.app", "up", *args.symbols,
                   "--mode", "testnet", "--interval", "1s", "-s", "sma_cross:fast=3,slow=8",
                   "--home", args.home, "--foreground"]
        child = subprocess.Popen(command, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:  # the fleet got the same Ctrl-C: let it stop in order
            return child.wait()


if __name__ == "__main__":
    sys.exit(main())
