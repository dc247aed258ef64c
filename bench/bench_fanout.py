"""Fan-out: bars per second delivered from one PUB to N subscriber processes, and losses.

As in the fleet, each subscriber is one symbol's process subscribed to its topic
(``SYMBOL\\0``) and the publisher cycles over the symbols, so N subscribers share the total.

- floor ("raw"): pre-built payloads sent and received frame by frame (``send(SNDMORE)``,
  ``recv()``: the cheapest two-frame path in pyzmq), subscribers only count them;
- product: every bar wrapped in a protocol ``BarMessage``, encoded and sent with
  ``send_multipart`` (as the orchestrator's feed loop does), every bar taken with
  ``recv_multipart`` and decoded and checked with ``orchestrator.protocol.decode`` (as a
  worker does); both with generous HWMs (no limit), so
  a loss would be a real loss;
- "product HWMs": the same with the product's own socket options (market PUB: default
  SNDHWM 1000; worker SUB: RCVHWM 100,000): what a burst this size does to a real fleet;
- what-if "plain send/recv": the product's encode and decode, but the frames sent and
  received one by one as the floor does (a proposed fix, measured).

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
from orchestrator.protocol import BarMessage, encode
from strategies.bar import Bar

SCENARIO = "fan-out to N workers"
_PRODUCT_SNDHWM = 1000  # zmq's default: the orchestrator does not set SNDHWM on the market PUB
_PRODUCT_RCVHWM = 100_000  # worker/main.py
_ids = itertools.count()


@dataclass(frozen=True)
class FanoutConfig:
    sizes: tuple[int, ...] = (1, 10, 50)
    bars: int = 200_000


@dataclass(frozen=True)
class Variant:
    name: str
    encode: bool  # wrap and encode each bar as it is sent
    multipart: bool  # pyzmq's send_multipart / recv_multipart, as the product (else frame by frame)
    mode: str  # subscriber: "raw" counts, "decode" decodes and checks, "decode-plain" too
    sndhwm: int  # 0 = no limit
    rcvhwm: int


RAW = Variant("raw", encode=False, multipart=False, mode="raw", sndhwm=0, rcvhwm=0)
PRODUCT = Variant("product", encode=True, multipart=True, mode="decode", sndhwm=0, rcvhwm=0)
PRODUCT_HWM = Variant("product HWMs", encode=True, multipart=True, mode="decode",
                      sndhwm=_PRODUCT_SNDHWM, rcvhwm=_PRODUCT_RCVHWM)
# what-if: the product's encode and decode, but frame-by-frame send/recv (a proposed fix)
PLAIN = Variant("plain send/recv", encode=True, multipart=False, mode="decode-plain", sndhwm=0,
                rcvhwm=0)


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
            pub.send_multipart([topic, PROBE])
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
                pub.send_multipart([topic, END])
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
        payloads = [encode(BarMessage(bar=bar)) for bar in sample]
        started = time.monotonic_ns()
        send, send_multipart, more = pub.send, pub.send_multipart, zmq.SNDMORE
        if variant.encode and variant.multipart:  # the feed loop: wrap, encode, send_multipart
            cycle = itertools.cycle(zip(topics, sample, strict=True))
            for topic, bar in itertools.islice(cycle, bars):
                send_multipart([topic, encode(BarMessage(bar=bar))])
        elif variant.encode:
            cycle = itertools.cycle(zip(topics, sample, strict=True))
            for topic, bar in itertools.islice(cycle, bars):
                send(topic, more)
                send(encode(BarMessage(bar=bar)))
        else:  # the cheapest way to send a two-frame message from Python
            for topic, payload in itertools.islice(
                    itertools.cycle(zip(topics, payloads, strict=True)), bars):
                send(topic, more)
                send(payload)
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
        plain = fanout_once(ws, n, cfg.bars, PLAIN)
        key, who = f"fanout.{n}", f"{n} worker" + ("s" if n > 1 else "")
        for name, result in (("product", product), ("product HWMs", hwm), ("plain", plain)):
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
            Figure(f"{key}.plain.rate", SCENARIO, f"{who}, what-if: the product's encode and "
                   "decode with plain send/recv: bars/s", "bars/s", plain.rate, raw.rate,
                   "raw PUB->SUB", detail=True),
        ]
    return figures
