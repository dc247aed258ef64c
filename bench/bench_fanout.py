"""Fan-out: bars per second delivered from one PUB to N subscriber processes, and losses.

As in the fleet, each subscriber is one symbol's process subscribed to its topic
(``SYMBOL\\0``) and the publisher cycles over the symbols, so N subscribers share the total.
A market message is one frame, ``SYMBOL\\0<envelope>`` (multibot/wire/protocol.py).

- floor ("raw"): pre-built frames sent with ``send()`` and taken with ``recv()``, the
  subscribers only count them;
- product: every bar encoded by the product's own ``encode_bar`` as the fleet publishes it,
  every frame decoded and checked with ``decode_market`` as a worker does; generous HWMs (no
  limit), so a loss would be a real loss;
- "product HWMs": the same with the product's own socket options (market PUB SNDHWM 100,000,
  worker SUB RCVHWM 100,000): what a burst this size does to a real fleet.

Rate = bars delivered / (last delivery - first send); the subscribers report the time of their
last bar on the system-wide monotonic clock, so no clock sync is involved.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass

import zmq

from bench.common import PYTHON, BenchError, Figure, Goal, Workspace
from bench.peers import END, PROBE
from multibot.market.bar import Bar
from multibot.wire.protocol import MARKET_HWM, encode_bar

SCENARIO = "fan-out to N workers"
_ids = itertools.count()


@dataclass(frozen=True)
class FanoutConfig:
    sizes: tuple[int, ...] = (1, 10, 50)
    bars: int = 200_000


@dataclass(frozen=True)
class Variant:
    name: str
    encode: bool  # encode each bar as it is sent (else pre-built frames)
    mode: str  # subscriber: "raw" counts, "decode" decodes and checks
    sndhwm: int  # 0 = no limit
    rcvhwm: int


RAW = Variant("raw", encode=False, mode="raw", sndhwm=0, rcvhwm=0)
PRODUCT = Variant("product", encode=True, mode="decode", sndhwm=0, rcvhwm=0)
PRODUCT_HWM = Variant("product HWMs", encode=True, mode="decode", sndhwm=MARKET_HWM,
                      rcvhwm=MARKET_HWM)


@dataclass(frozen=True)
class FanoutResult:
    sent: int
    delivered: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.delivered


def _bar(symbol: str, k: int) -> Bar:
    t = 1_700_000_000_000 + k * 60_000
    return Bar(symbol=symbol, open_time=t, close_time=t + 59_999, open=101.5, high=102.25,
               low=100.75, close=101.0, volume=1234.5)


def _sync(pub: zmq.Socket[bytes], pull: zmq.Socket[bytes], topics: list[bytes],
          timeout: float = 120.0) -> None:
    """Probe every topic until its subscriber says it is subscribed (no slow joiners)."""
    waiting = set(topics)
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            raise BenchError(f"{len(waiting)} subscribers never subscribed")
        for topic in waiting:
            pub.send(topic + PROBE)
        while pull.poll(20):
            _kind, _, symbol = pull.recv().partition(b" ")
            waiting.discard(symbol + b"\0")


def _finish(pub: zmq.Socket[bytes], pull: zmq.Socket[bytes], topics: list[bytes],
            timeout: float = 120.0) -> list[dict[str, int]]:
    """End markers until every subscriber has reported (a marker may be dropped at a HWM)."""
    reports: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + timeout
    while len(reports) < len(topics) and time.monotonic() < deadline:
        for topic in topics:
            if topic[:-1].decode() not in reports:
                pub.send(topic + END)
        while pull.poll(50):
            kind, _, body = pull.recv().partition(b" ")
            if kind == b"res":
                report = json.loads(body)
                reports[report.pop("topic")] = report
    if len(reports) < len(topics):
        raise BenchError(f"only {len(reports)} of {len(topics)} subscribers reported")
    return list(reports.values())


def fanout_once(ws: Workspace, n: int, bars: int, variant: Variant) -> FanoutResult:
    tag = f"fan-{next(_ids)}"
    ctx = zmq.Context()
    try:
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, variant.sndhwm)
        pub.bind(ws.endpoint(tag))
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(ws.endpoint(tag + "-r"))
        symbols = [f"S{i:03d}USDT" for i in range(n)]
        procs = [ws.spawn([PYTHON, "-m", "bench.peers", "sub", ws.endpoint(tag),
                           ws.endpoint(tag + "-r"), symbol, variant.mode, str(variant.rcvhwm)])
                 for symbol in symbols]
        topics = [symbol.encode() + b"\0" for symbol in symbols]
        _sync(pub, pull, topics)
        sample = [_bar(symbol, 0) for symbol in symbols]
        frames = [encode_bar(bar) for bar in sample]
        send = pub.send
        started = time.monotonic_ns()
        if variant.encode:  # what Fleet._publish_bars does for each bar
            for bar in itertools.islice(itertools.cycle(sample), bars):
                send(encode_bar(bar))
        else:
            for frame in itertools.islice(itertools.cycle(frames), bars):
                send(frame)
        reports = _finish(pub, pull, topics)
        for proc in procs:
            proc.wait(timeout=30)
    finally:
        ctx.destroy(linger=0)
    last = max(r["last_ns"] for r in reports)
    return FanoutResult(sent=bars, delivered=sum(r["received"] for r in reports),
                        errors=sum(r["errors"] for r in reports),
                        seconds=max(last - started, 1) / 1e9)


def run(ws: Workspace, cfg: FanoutConfig) -> list[Figure]:
    figures: list[Figure] = []
    for n in cfg.sizes:
        raw = fanout_once(ws, n, cfg.bars, RAW)
        product = fanout_once(ws, n, cfg.bars, PRODUCT)
        hwm = fanout_once(ws, n, cfg.bars, PRODUCT_HWM)
        key, who = f"fanout.{n}", f"{n} worker" + ("s" if n > 1 else "")
        for name, result in (("product", product), ("product HWMs", hwm)):
            if result.errors:
                raise BenchError(f"{who}, {name}: {result.errors} bad or missing bars")
        rate_goal = Goal(">= 100k bars/s", "value", ">=", 100_000) if n == 10 else None
        lost_goal = Goal("0 lost", "value", "<=", 0) if n == 10 else None
        figures += [
            Figure(f"{key}.rate", SCENARIO, f"{who}: bars/s delivered", "bars/s",
                   product.rate, raw.rate, "raw PUB->SUB", rate_goal),
            Figure(f"{key}.lost", SCENARIO, f"{who}: bars lost (of {cfg.bars:,})", "bars",
                   product.lost, raw.lost, "raw lost", lost_goal),
            Figure(f"{key}.hwm.rate", SCENARIO, f"{who}, product HWMs: bars/s",
                   "bars/s", hwm.rate, raw.rate, "raw PUB->SUB"),
            Figure(f"{key}.hwm.lost", SCENARIO, f"{who}, product HWMs: bars lost",
                   "bars", hwm.lost, raw.lost, "raw lost"),
        ]
    return figures
