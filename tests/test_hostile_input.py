"""Garbage on the live control and broker sockets: error replies, and the fleet trades on."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import msgspec
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st
from zmq.utils.monitor import recv_monitor_message

from multibot.market.bar import Bar, Signal
from multibot.market.orders import OrderStatus, OrderType, Side
from multibot.market.rules import bundled_rules
from multibot.wire import protocol as p
from multibot.wire.home import Home
from orchestrator.broker.memory_journal import MemoryJournal
from orchestrator.broker.paper import PaperBroker
from orchestrator.feeds.synthetic import SyntheticFeed
from orchestrator.ports import Trading
from orchestrator.worker_link import WorkerLink, WorkerLinkPorts
from strategies.base import Strategy
from tests.support import FleetCli, eventually, record_figures
from worker.runner import Runner

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def live_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetCli]:
    cli = FleetCli(tmp_path_factory.mktemp("hostile") / "home")
    try:
        cli.up("BTCUSDT", "--speed", "20")
        yield cli
    finally:
        cli.cleanup()


def _socket(cli: FleetCli, name: str, identity: bytes | None = None) -> zmq.Socket[bytes]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(Home.at(cli.home).endpoint(name))
    return sock


def _reply(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> p.Message:
    assert sock.poll(timeout_ms), "no reply"
    _, message = p.decode(sock.recv())
    return message


def _error_code(sock: zmq.Socket[bytes]) -> str:
    message = _reply(sock)
    assert isinstance(message, p.Error), message
    return message.code


FUZZ_CASES = {"control": 0, "broker": 0}
# well-formed envelopes of every type with random bodies ("down" is a legitimate command)
_TYPED_GARBAGE = st.builds(
    lambda t, body: msgspec.msgpack.encode({"v": 1, "id": "f", "type": t, "ts_ns": 0,
                                            "body": body}),
    st.sampled_from(sorted(set(p.MESSAGE_TYPES) - {"down"})),
    st.dictionaries(st.text(max_size=12), st.integers(-(2**63), 2**63 - 1)
                    | st.text(max_size=8), max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512) | _TYPED_GARBAGE)
def test_random_bytes_on_control_get_error_replies(live_fleet: FleetCli, data: bytes) -> None:
    sock = _socket(live_fleet, "control")
    try:
        sock.send(data)
        reply = _reply(sock)
        assert isinstance(reply, p.Error | p.Pong | p.StatusReport | p.Ok)
        FUZZ_CASES["control"] += 1
    finally:
        sock.close()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=512) | _TYPED_GARBAGE)
def test_random_bytes_on_the_broker_socket_get_error_replies(live_fleet: FleetCli,
                                                             data: bytes) -> None:
    sock = _socket(live_fleet, "broker")  # no routing id of its own: ZeroMQ assigns one
    try:
        sock.send(data)
        reply = _reply(sock)
        assert isinstance(reply, p.Error)
        FUZZ_CASES["broker"] += 1
    finally:
        sock.close()


def test_the_fleet_survived_the_fuzzing(live_fleet: FleetCli) -> None:
    worker = live_fleet.workers()["BTCUSDT"]
    eventually(lambda: live_fleet.workers()["BTCUSDT"]["bars"] > worker["bars"] + 3,
               what="trading to go on after the fuzzing")
    rss = psutil.Process(live_fleet.status()["orchestrator"]["pid"]).memory_info().rss
    assert rss < 300 * 2**20  # bounded memory after thousands of hostile messages
    record_figures({"fuzz_cases_control": FUZZ_CASES["control"],
                    "fuzz_cases_broker": FUZZ_CASES["broker"],
                    "orchestrator_rss_after_fuzz_mb": round(rss / 2**20, 1)})


def test_each_kind_of_bad_control_message(live_fleet: FleetCli) -> None:
    sock = _socket(live_fleet, "control")
    try:
        cases = [
            (b"\xc1garbage", "malformed"),
            (msgspec.msgpack.encode({"v": 99, "id": "x", "type": "ping", "ts_ns": 0,
                                     "body": {}}), "bad_version"),
            (p.encode(p.Ping())[:-3], "malformed"),
            (b"\x00" * (p.MAX_MESSAGE_BYTES + 10), "too_large"),
            (p.encode(p.BarMessage(bar=_bar())), "not_allowed"),
            (msgspec.msgpack.encode({"v": 1, "id": "x", "type": "nope", "ts_ns": 0,
                                     "body": {}}), "unknown_type"),
            (msgspec.msgpack.encode({"v": 1, "id": "x", "type": "kill", "ts_ns": 0,
                                     "body": {"symbols": 5}}), "bad_body"),
            (p.encode(p.Up(symbols=["ZZZUSDT"])), "unknown_symbol"),
            (p.encode(p.Up(symbols=["BTCUSDT"], stake="-5")), "bad_config"),
            (p.encode(p.Up(symbols=["ETHUSDT"], stake="0.5")), "bad_config"),  # below minimum
            (p.encode(p.Kill(symbols=["ETHUSDT"])), "not_running"),
        ]
        for data, code in cases:
            sock.send(data)
            assert _error_code(sock) == code, data[:40]
        sock.send_multipart([b"two", b"frames"])
        assert _error_code(sock) == "malformed"
    finally:
        sock.close()
    assert live_fleet.workers()["BTCUSDT"]["state"] == "RUNNING"


def _bar() -> Bar:
    return Bar(symbol="BTCUSDT", open_time=0, close_time=59_999, open=1.0, high=1.0,
               low=1.0, close=1.0, volume=1.0)


NESTED = b"\x91" * 2_000 + b"\xc0"  # 2 KB: two thousand nested one-element arrays


@pytest.mark.parametrize("where", ["envelope", "body"])
def test_deeply_nested_messages_get_errors_and_every_loop_goes_on(live_fleet: FleetCli,
                                                                   where: str) -> None:
    worker = live_fleet.workers()["BTCUSDT"]
    data = NESTED if where == "envelope" else msgspec.msgpack.encode(
        {"v": 1, "id": "x", "type": "status", "ts_ns": 0, "body": msgspec.Raw(NESTED)})
    control = _socket(live_fleet, "control")
    broker = _socket(live_fleet, "broker")
    try:
        for sock in (control, broker, control, broker):  # twice: the loops still read
            sock.send(data)
            assert _error_code(sock) in ("malformed", "bad_body")
        control.send(p.encode(p.Status()))
        assert isinstance(_reply(control), p.StatusReport)
    finally:
        control.close()
        broker.close()
    # the worker's heartbeats are still read (its bar count advances in status) ...
    eventually(lambda: live_fleet.workers()["BTCUSDT"]["bars"] > worker["bars"] + 3,
               what="the broker loop to go on reading heartbeats")
    after = live_fleet.workers()["BTCUSDT"]
    # ... and the real worker was never judged hung
    assert after["state"] == "RUNNING" and after["pid"] == worker["pid"]
    assert after["restarts"] == worker["restarts"]


def test_strangers_on_the_broker_socket_are_refused(live_fleet: FleetCli) -> None:
    worker = live_fleet.workers()["BTCUSDT"]
    stranger = _socket(live_fleet, "broker", identity=b"EVILUSDT")
    anonymous = _socket(live_fleet, "broker")
    try:
        order = p.PlaceOrder(client_order_id="mb-EVILUSDT-1", side=Side.BUY, type=OrderType.MARKET,
                             quantity="1")
        stranger.send(p.encode(order))
        assert _error_code(stranger) == "not_allowed"
        stranger.send(p.encode(p.Register(symbol="BTCUSDT", pid=worker["pid"],
                                          token=bytes(p.WORKER_TOKEN_BYTES))))
        assert _error_code(stranger) == "not_allowed"  # cannot register as someone else
        stranger.send(p.encode(p.Register(symbol="EVILUSDT", pid=1, token=b"")))
        assert _error_code(stranger) == "not_allowed"
        stranger.send(b"\xc1")
        assert _error_code(stranger) == "malformed"
        anonymous.send(p.encode(order))  # an unregistered connection speaks for nobody
        assert _error_code(anonymous) == "not_allowed"
    finally:
        stranger.close()
        anonymous.close()
    bars = worker["bars"]
    eventually(lambda: live_fleet.workers()["BTCUSDT"]["bars"] > bars + 3,
               what="the real worker to keep trading")
    assert live_fleet.workers()["BTCUSDT"]["pid"] == worker["pid"]
    with live_fleet.journal() as journal:
        assert journal.execute(
            "SELECT count(*) FROM orders WHERE symbol = 'EVILUSDT'").fetchone()[0] == 0


def test_a_flooding_client_gets_busy_replies_and_cannot_starve_others(
        live_fleet: FleetCli) -> None:
    flood = _socket(live_fleet, "control")
    other = _socket(live_fleet, "control")
    try:
        for _ in range(300):
            flood.send(p.encode(p.Status()))
        other.send(p.encode(p.Ping()))
        assert isinstance(_reply(other, 5000), p.Pong)  # served in the middle of the flood
        kinds: dict[str, int] = {}
        for _ in range(300):
            reply = _reply(flood)
            key = reply.code if isinstance(reply, p.Error) else reply.TYPE
            kinds[key] = kinds.get(key, 0) + 1
        assert set(kinds) <= {"status_report", "busy"} and sum(kinds.values()) == 300
        assert kinds.get("busy", 0) > 0, kinds  # the per-peer in-flight limit kicked in
    finally:
        flood.close()
        other.close()
    assert live_fleet.workers()["BTCUSDT"]["state"] == "RUNNING"


def _monitored(cli: FleetCli, name: str, kind: int,
               identity: bytes | None = None) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """A peer of the fleet's ``name`` socket and its monitor, watched from before it connects."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    sock.connect(Home.at(cli.home).endpoint(name))
    return sock, monitor


def _next_event(monitor: zmq.Socket[bytes], timeout_s: float = 10.0) -> int | None:
    """The next monitor event (HANDSHAKE_SUCCEEDED or DISCONNECTED), None if none comes."""
    if not monitor.poll(int(timeout_s * 1000)):
        return None
    return int(recv_monitor_message(monitor)["event"])


def _close(*socks: zmq.Socket[bytes]) -> None:
    for sock in socks:
        sock.close(linger=0)


@pytest.mark.parametrize("name", ["market", "events"])
def test_an_oversized_subscription_drops_the_peer_and_others_go_on(live_fleet: FleetCli,
                                                                   name: str) -> None:
    worker = live_fleet.workers()["BTCUSDT"]
    hostile, hostile_events = _monitored(live_fleet, name, zmq.SUB)
    normal, normal_events = _monitored(live_fleet, name, zmq.SUB)
    try:
        # subscriptions a legitimate peer sends: a worker's, or an events reader's
        topics = ([p.market_topic("BTCUSDT"), p.HEARTBEAT_TOPIC] if name == "market"
                  else [kind.encode() for kind in p.EventKind] + [b""])
        for topic in topics:
            normal.setsockopt(zmq.SUBSCRIBE, topic)
        hostile.setsockopt(zmq.SUBSCRIBE, b"x" * 100_000)
        assert _next_event(hostile_events) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert _next_event(hostile_events) == zmq.EVENT_DISCONNECTED  # dropped by the fleet
        assert _next_event(normal_events) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        if name == "market":  # the worker's subscriptions fit: bars and heartbeats arrive
            assert normal.poll(10_000), "no market frame for a worker-like subscriber"
            assert normal.recv().startswith(tuple(topics))
        assert _next_event(normal_events, 1.0) is None  # and it stays connected
    finally:
        _close(hostile, hostile_events, normal, normal_events)
    eventually(lambda: live_fleet.workers()["BTCUSDT"]["bars"] > worker["bars"] + 3,
               what="the fleet to keep trading")
    after = live_fleet.workers()["BTCUSDT"]
    assert after["state"] == "RUNNING" and after["pid"] == worker["pid"]


def test_a_message_over_the_broker_limit_drops_the_peer_not_the_workers(
        live_fleet: FleetCli) -> None:
    worker = live_fleet.workers()["BTCUSDT"]
    fat, fat_events = _monitored(live_fleet, "broker", zmq.DEALER, identity=b"FATUSDT")
    try:
        assert _next_event(fat_events) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        heartbeat = p.encode(p.WorkerHeartbeat(last_error="x" * p.BROKER_MAX_MESSAGE_BYTES))
        assert p.BROKER_MAX_MESSAGE_BYTES < len(heartbeat) < p.MAX_MESSAGE_BYTES
        fat.send(heartbeat)
        assert _next_event(fat_events) == zmq.EVENT_DISCONNECTED
        assert not fat.poll(500), "a dropped peer got a reply"
    finally:
        _close(fat, fat_events)
    eventually(lambda: live_fleet.workers()["BTCUSDT"]["bars"] > worker["bars"] + 3,
               what="the real worker to keep trading")
    after = live_fleet.workers()["BTCUSDT"]
    assert after["state"] == "RUNNING" and after["pid"] == worker["pid"]
    assert after["restarts"] == worker["restarts"]


def test_a_worker_error_text_on_the_wire_fits_the_broker_limit() -> None:
    """The largest worker messages (heartbeat, goodbye) carry an error text cut to
    MAX_ERROR_CHARS: even in 4-byte characters they stay under the broker socket's limit."""
    text = "\U0001f4a5" * p.MAX_ERROR_CHARS
    for message in (p.WorkerHeartbeat(last_error=text, position="1" * 60),
                    p.Goodbye(reason=text)):
        assert len(p.encode(message)) < p.BROKER_MAX_MESSAGE_BYTES


class _Verbose(Strategy):
    """Fails every bar with an error text far over the broker socket's limit."""

    name = "verbose"
    warmup = 0

    def on_bar(self, bar: Bar) -> Signal | None:
        raise RuntimeError("x" * 200_000)


def test_a_worker_whose_strategy_raises_a_huge_error_still_fits_the_broker_limit() -> None:
    rules = bundled_rules()["BTCUSDT"]
    config = p.WorkerConfig(symbol="BTCUSDT", strategies=[], stake="100", order_type="MARKET")
    runner = Runner(config, rules, [_Verbose()], p.PositionView(symbol="BTCUSDT"), [], 1)
    runner.on_bar(_bar())
    heartbeat = runner.stats()
    assert heartbeat.strategy_errors == 1 and heartbeat.last_error.startswith("strategy ")
    assert len(p.encode(heartbeat)) < p.BROKER_MAX_MESSAGE_BYTES


class _Recorder:
    """Stands in for the broker ROUTER: what the worker link sends."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


class _BrokenSupervisor:
    def registered(self, symbol: str, pid: int, token: bytes, route: bytes) -> None:
        raise RuntimeError("a bug met by one message")


def test_an_exception_handling_one_worker_message_is_answered_not_fatal() -> None:
    ports = cast(Any, WorkerLinkPorts)(supervisor=_BrokenSupervisor(), trading=None,
                                       journal=None, order_event=None, spawn=None)
    link, sock = WorkerLink(ports), _Recorder()
    for _ in range(2):  # the link goes on: the next message is handled the same way
        link._handle(cast(Any, sock), [b"BTCUSDT", p.encode(p.Register(symbol="BTCUSDT", pid=1,
                                                                          token=b""))])
    assert len(sock.sent) == 2
    for identity, data in sock.sent:
        _, reply = p.decode(data)
        assert identity == b"BTCUSDT" and isinstance(reply, p.Error)
        assert reply.code == "internal" and "a bug met by one message" in reply.reason


class _LiveSupervisor:
    def symbol_of(self, route: bytes) -> str:
        return route.decode()

    def is_live(self, symbol: str) -> bool:
        return True


class _OpenJournal:
    def guard(self) -> None:
        """Never halted."""


def test_a_paper_order_is_placed_and_answered_when_it_is_read() -> None:
    """Not in a task a bar could overtake: the fill takes the price of the bar the worker saw,
    and the reply and the order's event leave before the link reads anything else."""
    broker = PaperBroker(MemoryJournal(), bundled_rules())
    broker.on_bar(Bar(symbol="BTCUSDT", open_time=0, close_time=59_999, open=50_000.0,
                      high=50_000.0, low=50_000.0, close=50_000.0, volume=1.0))
    events: list[p.OrderUpdate] = []
    ports = cast(Any, WorkerLinkPorts)(
        supervisor=_LiveSupervisor(),
        trading=Trading(broker=broker, feed=SyntheticFeed(cursor=0), rules={}),  # at bar 0
        journal=_OpenJournal(), order_event=events.append, spawn=None)
    link, sock = WorkerLink(ports), _Recorder()
    order = p.PlaceOrder(client_order_id="mb-BTCUSDT-1", side=Side.BUY, type=OrderType.MARKET,
                         quantity="0.001", bar_time=0)
    link._handle(cast(Any, sock), [b"BTCUSDT", p.encode(order)])
    assert len(sock.sent) == 1 and len(events) == 1  # answered now, no task left to run
    _, reply = p.decode(sock.sent[0][1])
    assert isinstance(reply, p.OrderUpdate) and reply.order.status == OrderStatus.FILLED
    assert Decimal(reply.fills[0].price) == Decimal("50010.00")  # this bar's close + slippage
