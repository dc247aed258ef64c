"""Bar -> order-intent latency of real worker processes, against a raw ipc round trip.

Floor: a DEALER/ROUTER round trip of a bar-sized message between this process and an echo
process (``bench.peers echo``): two ipc hops and two wake-ups, nothing else. Each round trip
comes after the same 5 ms pause as each of the product's bars (bars come after a quiet spell:
here, the time for the fills to reach the workers), so both pay for waking idle processes and
cores, which on this VM costs ~100 µs a round trip. The same round trip back to back (hot
caches, cores awake) is measured too, and shown.

Product: three real workers (``python -m worker``) against a stand-in orchestrator: this
process binds the market PUB and broker ROUTER of a temp home, answers Register with a Welcome
(bundled exchange rules) and publishes bars that make ``sma_cross:fast=1,slow=2`` flip every
bar (an alternating price), so every bar makes the worker send a PlaceOrder. Latency = publish
of the bar -> receipt of that PlaceOrder, both timed here (no cross-process clocks). Each order
is answered with a fill, as the broker would, so the worker's position stays consistent.

"burst": a bar for each of the three symbols at once, as the feed publishes a step (the goal's
figure); "one at a time": one bar in flight (the path without queueing behind other workers).
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal

import zmq

from bench.common import (
    PYTHON,
    BenchError,
    Figure,
    Goal,
    Stats,
    Workspace,
    bench_env,
    cpu_seconds,
    thread_cpu_seconds,
)
from multibot.market.bar import Bar
from multibot.market.orders import OrderStatus
from multibot.market.rules import bundled_rules, fmt
from multibot.wire.home import Home
from multibot.wire.protocol import (
    BarMessage,
    FillView,
    OrderUpdate,
    OrderView,
    PlaceOrder,
    PositionView,
    ProtocolError,
    Register,
    StopWorker,
    StrategySpec,
    Welcome,
    WorkerConfig,
    WorkerHeartbeat,
    decode,
    encode,
    encode_bar,
    heartbeat_frame,
)
from orchestrator.supervisor import worker_environment

SCENARIO = "bar -> order intent, 3 workers"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")
_PRICES = {"BTCUSDT": 60000.0, "ETHUSDT": 3000.0, "XRPUSDT": 0.6}
_STRATEGY = StrategySpec(name="sma_cross", params={"fast": 1, "slow": 2})
_HISTORY = 5  # alternating bars ending on a low: the first live bar (a high) makes a BUY
_GAP_S = 0.005  # after a step's fills are sent: they reach the workers before the next bar
_ORDER_TIMEOUT_S = 0.5
_T0_MS = 1_700_000_000_000
_MINUTE_MS = 60_000


@dataclass(frozen=True)
class LatencyConfig:
    floor_trips: int = 1000  # after a pause each (the floor), then as many back to back
    steps: int = 1000  # burst steps (3 bars each), and as many one-at-a-time bars
    warmup: int = 20


def _sample_bar() -> bytes:
    bar = Bar(symbol="BTCUSDT", open_time=_T0_MS, close_time=_T0_MS + _MINUTE_MS - 1,
              open=60000.0, high=60100.0, low=59900.0, close=60050.0, volume=12.5)
    return encode(BarMessage(bar=bar))


def floor_round_trips(ws: Workspace, trips: int, warmup: int, pause_s: float = 0.0
                      ) -> list[float]:
    """Round trips (µs) of a bar-sized message: ROUTER here, DEALER echo in another process;
    each after ``pause_s`` of quiet (0: back to back)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = ws.endpoint("echo")
    router.bind(endpoint)
    peer = ws.spawn([PYTHON, "-m", "bench.peers", "echo", endpoint])
    try:
        if not router.poll(30_000):
            raise BenchError("the echo peer did not connect within 30 s")
        identity, _hello = router.recv_multipart()
        payload = _sample_bar()
        out: list[float] = []
        for i in range(warmup + trips):
            if pause_s:
                time.sleep(pause_s)
            started = time.perf_counter_ns()
            router.send_multipart([identity, payload])
            if not router.poll(5000):
                raise BenchError("the echo peer stopped answering")
            router.recv_multipart()
            if i >= warmup:
                out.append((time.perf_counter_ns() - started) / 1000)
        router.send_multipart([identity, b"B"])
        peer.wait(timeout=10)
        return out
    finally:
        ctx.destroy(linger=0)


class StandIn:
    """The orchestrator's market and broker sockets, served by this process."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.home = Home.at(ws.path / "latency")
        self.home.ensure()
        self._ctx = zmq.Context()
        self._market = self._ctx.socket(zmq.PUB)
        self._broker = self._ctx.socket(zmq.ROUTER)
        for sock, name in ((self._market, "market"), (self._broker, "broker")):
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.home.endpoint(name))
        self._rules = bundled_rules()
        self._bars = dict.fromkeys(SYMBOLS, 0)
        self._position = dict.fromkeys(SYMBOLS, Decimal(0))
        self._last_close = dict.fromkeys(SYMBOLS, 0.0)
        self._trade_ids = itertools.count(1)
        self._next_beat = 0.0
        # routing ids are ZeroMQ's: a worker's is learnt from its Register (tokens unchecked)
        self._route_of: dict[str, bytes] = {}
        self._symbol_of: dict[bytes, str] = {}
        self.misses = 0
        self.late = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def close(self) -> None:
        self._ctx.destroy(linger=0)

    def _send(self, symbol: str, message: object) -> None:
        self._broker.send_multipart([self._route_of[symbol],
                                     encode(message)])  # type: ignore[arg-type]

    def bar(self, symbol: str) -> Bar:
        k = self._bars[symbol]
        self._bars[symbol] = k + 1
        close = _PRICES[symbol] * (1.005 if k % 2 else 1.0)
        self._last_close[symbol] = close
        open_time = _T0_MS + k * _MINUTE_MS
        return Bar(symbol=symbol, open_time=open_time, close_time=open_time + _MINUTE_MS - 1,
                   open=close, high=close, low=close, close=close, volume=1.0)

    def _welcome(self, symbol: str) -> Welcome:
        config = WorkerConfig(symbol=symbol, strategies=[_STRATEGY], stake="100")
        return Welcome(config=config, rules=self._rules[symbol],
                       position=PositionView(symbol=symbol), open_orders=[], next_seq=1,
                       history=[self.bar(symbol) for _ in range(_HISTORY)])

    def start_workers(self, timeout: float = 60.0) -> None:
        """Spawn the workers and serve them until each has registered and sent a heartbeat."""
        for symbol in SYMBOLS:
            proc = self.ws.spawn([PYTHON, "-m", "worker", "--symbol", symbol, "--home",
                           str(self.home.root)], log=self.home.worker_log(symbol),
                          env=worker_environment(bench_env()))  # as the supervisor does
            self.procs.append(proc)
        running: set[str] = set()
        deadline = time.monotonic() + timeout
        while running != set(SYMBOLS):
            if time.monotonic() > deadline:
                raise BenchError(f"workers not running after {timeout:g}s: "
                                 f"{sorted(set(SYMBOLS) - running)}")
            self.beat()
            if not self._broker.poll(100):
                continue
            identity, payload = self._broker.recv_multipart()
            _envelope, message = decode(payload)
            if isinstance(message, Register):
                symbol = message.symbol
                self._route_of[symbol], self._symbol_of[identity] = identity, symbol
                self._send(symbol, self._welcome(symbol))
            elif isinstance(message, WorkerHeartbeat):
                running.add(self._symbol_of[identity])

    def beat(self) -> None:
        now = time.monotonic()
        if now >= self._next_beat:  # one broadcast on the market PUB, as the fleet does
            self._next_beat = now + 1.0
            self._market.send(heartbeat_frame())

    def publish(self, symbol: str) -> int:
        """Publish the symbol's next bar; returns the send time (perf_counter_ns)."""
        frame = encode_bar(self.bar(symbol))
        sent = time.perf_counter_ns()
        self._market.send(frame)  # what Fleet._publish_bars does
        return sent

    def _receive(self, timeout_ms: int) -> tuple[int, str, PlaceOrder] | None:
        """The next PlaceOrder (receipt time, symbol, order); other messages are skipped."""
        deadline = time.monotonic() + timeout_ms / 1000
        while (left := deadline - time.monotonic()) > 0 or timeout_ms == 0:
            if not self._broker.poll(int(left * 1000) if timeout_ms else 0):
                return None
            identity, payload = self._broker.recv_multipart()
            received = time.perf_counter_ns()
            try:
                _envelope, message = decode(payload)
            except ProtocolError as exc:
                raise BenchError(f"a worker sent a bad message: {exc}") from None
            if isinstance(message, PlaceOrder):
                return received, self._symbol_of[identity], message
        return None

    def drain(self) -> None:
        """Orders that came after their bar's timeout: filled, counted, never timed."""
        while (late := self._receive(0)) is not None:
            self.late += 1
            self.fill(late[1], late[2])

    def await_orders(self, sent: dict[str, int]) -> list[float]:
        """Latency (µs) of each symbol's order for the bar just published; fills them all."""
        got: dict[str, tuple[int, PlaceOrder]] = {}
        deadline = time.monotonic() + _ORDER_TIMEOUT_S
        while len(got) < len(sent):
            left_ms = int((deadline - time.monotonic()) * 1000)
            found = self._receive(left_ms) if left_ms > 0 else None
            if found is None:
                break
            received, symbol, order = found
            if symbol in sent and symbol not in got:
                got[symbol] = (received, order)
            else:
                self.late += 1
                self.fill(symbol, order)
        self.misses += len(sent) - len(got)
        for symbol, (_received, order) in got.items():
            self.fill(symbol, order)
        return [(received - sent[symbol]) / 1000 for symbol, (received, _) in got.items()]

    def fill(self, symbol: str, order: PlaceOrder) -> None:
        qty = Decimal(order.quantity)
        self._position[symbol] += qty if order.side == "BUY" else -qty
        price = repr(self._last_close[symbol])
        view = OrderView(client_order_id=order.client_order_id, symbol=symbol, side=order.side,
                         type=order.type, quantity=order.quantity, status=OrderStatus.FILLED,
                         executed_qty=order.quantity)
        fill = FillView(trade_id=next(self._trade_ids), client_order_id=order.client_order_id,
                        symbol=symbol, side=order.side, price=price, qty=order.quantity,
                        fee="0", fee_asset="USDT", time_ns=time.time_ns())
        position = PositionView(symbol=symbol, qty=fmt(self._position[symbol]))
        self._send(symbol, OrderUpdate(order=view, fills=[fill], position=position))

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop_workers(self, timeout: float = 10.0) -> None:
        """As the orchestrator does: StopWorker, then wait for each to say goodbye and exit."""
        for symbol in SYMBOLS:
            self._send(symbol, StopWorker())
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class ProductLatency:
    burst: list[float]  # µs
    single: list[float]  # µs
    misses: int
    worker_cpu_per_bar: float  # µs of worker CPU (all threads) per bar, one-at-a-time phase
    worker_main_user_per_bar: float  # of which the Python (main) threads, in user mode
    worker_main_system_per_bar: float  # ... and in the kernel (system calls)


def product_latencies(ws: Workspace, cfg: LatencyConfig) -> ProductLatency:
    stand = StandIn(ws)
    burst: list[float] = []
    single: list[float] = []
    try:
        stand.start_workers()
        for step in range(cfg.warmup + cfg.steps):
            if step == cfg.warmup:
                stand.misses = 0  # warm-up misses are expected (subscriptions propagating)
            stand.drain()
            sent = {symbol: stand.publish(symbol) for symbol in SYMBOLS}
            got = stand.await_orders(sent)
            if step >= cfg.warmup:
                burst += got
            stand.beat()
            time.sleep(_GAP_S)
        cpu_before, threads_before = cpu_seconds(stand.pids), thread_cpu_seconds(stand.pids)
        for step in range(cfg.steps):
            stand.drain()
            symbol = SYMBOLS[step % len(SYMBOLS)]
            single += stand.await_orders({symbol: stand.publish(symbol)})
            stand.beat()
            time.sleep(_GAP_S)
        cpu_after, threads_after = cpu_seconds(stand.pids), thread_cpu_seconds(stand.pids)
        stand.stop_workers()  # the workspace kills any straggler
    finally:
        stand.close()
    used = sum(cpu_after[p] - cpu_before[p] for p in cpu_after if p in cpu_before)
    user, system = (threads_after[i] - threads_before[i] for i in (0, 1))
    return ProductLatency(burst=burst, single=single, misses=stand.misses,
                          worker_cpu_per_bar=used / cfg.steps * 1e6,
                          worker_main_user_per_bar=user / cfg.steps * 1e6,
                          worker_main_system_per_bar=system / cfg.steps * 1e6)


def run(ws: Workspace, cfg: LatencyConfig) -> list[Figure]:
    floor = Stats.of(floor_round_trips(ws, cfg.floor_trips, cfg.warmup, _GAP_S))
    hot = Stats.of(floor_round_trips(ws, cfg.floor_trips, cfg.warmup))
    product = product_latencies(ws, cfg)
    if not product.burst or not product.single:
        raise BenchError("no order intent was received at all")
    burst, single = Stats.of(product.burst), Stats.of(product.single)
    rt = f"raw ipc round trip after {_GAP_S * 1000:g} ms"
    bars = len(SYMBOLS) * cfg.steps + cfg.steps
    return [
        Figure("latency.p50", SCENARIO, "p50 (burst of 3 bars)", "µs", burst.median,
               floor.median, f"{rt} p50", Goal("p50 <= 3x the floor", "ratio", "<=", 3.0)),
        Figure("latency.p99", SCENARIO, "p99 (burst of 3 bars)", "µs", burst.p99,
               floor.p99, f"{rt} p99"),
        Figure("latency.single.p50", SCENARIO, "p50 (one bar at a time)", "µs", single.median,
               floor.median, f"{rt} p50"),
        Figure("latency.single.p99", SCENARIO, "p99 (one bar at a time)", "µs", single.p99,
               floor.p99, f"{rt} p99"),
        Figure("latency.p50.vs_hot", SCENARIO, "p50 (burst of 3 bars), against the round trip "
               "back to back", "µs", burst.median, hot.median,
               "raw ipc round trip back to back p50"),
        Figure("latency.hot.p50", SCENARIO, "raw ipc round trip back to back, p50", "µs",
               hot.median, floor.median, f"{rt} p50"),
        Figure("latency.hot.p99", SCENARIO, "raw ipc round trip back to back, p99", "µs",
               hot.p99, floor.p99, f"{rt} p99"),
        Figure("latency.misses", SCENARIO, f"bars without an intent within "
               f"{_ORDER_TIMEOUT_S:g} s (of {bars:,})", "bars", float(product.misses)),
        Figure("latency.worker_cpu", SCENARIO, "worker CPU per bar (one at a time, all "
               "threads)", "µs", product.worker_cpu_per_bar, detail=True),
        Figure("latency.worker_cpu.main_user", SCENARIO, "... of which the Python thread in "
               "user mode", "µs", product.worker_main_user_per_bar, detail=True),
        Figure("latency.worker_cpu.main_system", SCENARIO, "... the Python thread in the kernel "
               "(the rest: ZeroMQ's I/O threads)", "µs", product.worker_main_system_per_bar,
               detail=True),
    ]
