"""Workers prove who they are on the broker socket (a per-start token), and nobody else can
register, trade, cancel or receive replies in their name. Real fleets, real sockets."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq

from multibot.market.orders import OrderType, Side
from multibot.wire import protocol as p
from multibot.wire.home import Home
from orchestrator.worker_routes import WorkerRoutes
from tests.backtest_support import strategy_file
from tests.support import FleetCli, eventually, where, worker_running

pytestmark = pytest.mark.process

IMPOSTOR_COID = "mb-BTCUSDT-900001"

# Runs inside the worker, as any strategy may: writes the token its process registered with
# where the test can read it (the only way a test can learn a token, short of a debugger).
LEAKER = """\
import gc, os


class Leak(Strategy):
    name = "leak"
    warmup = 0

    def on_start(self):
        for obj in gc.get_objects():
            if type(obj).__name__ == "WorkerProcess" and hasattr(obj, "_token"):
                path = {directory!r} + f"/token-{{os.getpid()}}"
                with open(path + ".tmp", "w") as f:
                    f.write(obj._token.hex())
                os.replace(path + ".tmp", path)

    def on_bar(self, bar):
        return None
"""


@pytest.fixture
def impostors() -> Iterator[list[zmq.Socket[bytes]]]:
    made: list[zmq.Socket[bytes]] = []
    try:
        yield made
    finally:
        for sock in made:
            sock.close(linger=0)


def _dealer(made: list[zmq.Socket[bytes]], fleet: FleetCli,
            identity: bytes | None = None) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    made.append(sock)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(Home.at(fleet.home).endpoint("broker"))
    return sock


def _answer(sock: zmq.Socket[bytes], message: p.Message) -> p.Message:
    sock.send(p.encode(message))
    assert sock.poll(5000), f"no answer to {message.TYPE}"
    _, reply = p.decode(sock.recv())
    return reply


def _refused(sock: zmq.Socket[bytes], message: p.Message) -> str:
    reply = _answer(sock, message)
    assert isinstance(reply, p.Error) and reply.code == "not_allowed", reply
    return reply.reason


def _buy(coid: str = IMPOSTOR_COID) -> p.PlaceOrder:
    return p.PlaceOrder(client_order_id=coid, side=Side.BUY, type=OrderType.MARKET,
                        quantity="0.001")


def _orders(fleet: FleetCli, coid: str) -> int:
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        row = journal.execute("SELECT count(*) FROM orders WHERE client_order_id = ?",
                              (coid,)).fetchone()
    return int(row[0])


def test_routes_bind_one_connection_to_a_symbols_current_token() -> None:
    routes = WorkerRoutes()
    token = routes.issue("BTCUSDT")
    assert len(token) == p.WORKER_TOKEN_BYTES and token.hex() not in repr(routes)
    for wrong in (bytes(p.WORKER_TOKEN_BYTES), token[:-1], b""):
        with pytest.raises(p.ProtocolError, match="not the token of its current worker"):
            routes.admit("BTCUSDT", wrong, b"a")
    assert routes.route_of("BTCUSDT") is None
    routes.admit("BTCUSDT", token, b"a")
    routes.admit("BTCUSDT", token, b"a")  # the same connection again: no change
    with pytest.raises(p.ProtocolError, match="registered on another connection"):
        routes.admit("BTCUSDT", token, b"b")
    with pytest.raises(p.ProtocolError, match="speaks for BTCUSDT, not ETHUSDT"):
        routes.admit("ETHUSDT", routes.issue("ETHUSDT"), b"a")
    assert (routes.symbol_of(b"a"), routes.route_of("BTCUSDT"), routes.symbol_of(b"b")) == (
        "BTCUSDT", b"a", None)
    fresh = routes.issue("BTCUSDT")  # a new worker process: the old token and route are void
    assert fresh != token and routes.symbol_of(b"a") is None
    with pytest.raises(p.ProtocolError):
        routes.admit("BTCUSDT", token, b"a")
    routes.admit("BTCUSDT", fresh, b"c")
    routes.revoke("BTCUSDT")  # the worker exited
    assert routes.route_of("BTCUSDT") is None and routes.symbol_of(b"c") is None


def test_an_impostor_with_the_workers_identity_cannot_trade_cancel_or_take_its_replies(
        fleet: FleetCli, impostors: list[zmq.Socket[bytes]]) -> None:
    fleet.up("BTCUSDT", "--speed", "50", "-s", "sma_cross:fast=2,slow=5")
    worker = eventually(lambda: where(fleet.workers()["BTCUSDT"], lambda w: w["trades"] >= 2),
                        timeout=30, what="BTCUSDT trading")
    impostor = _dealer(impostors, fleet, identity=b"BTCUSDT")
    _refused(impostor, _buy())  # a routing id equal to the symbol speaks for nobody
    _refused(impostor, p.CancelOrder(client_order_id="mb-BTCUSDT-1"))
    _refused(impostor, p.Register(symbol="BTCUSDT", pid=worker["pid"],
                                  token=os.urandom(p.WORKER_TOKEN_BYTES)))
    _refused(impostor, _buy())  # the refused registration bound nothing
    # The real worker goes on trading, and none of its replies reach the impostor.
    trades, deadline = worker["trades"], time.monotonic() + 60
    while fleet.workers()["BTCUSDT"]["trades"] < trades + 4:
        assert time.monotonic() < deadline, "the real worker stopped trading"
        assert not impostor.poll(200), f"the impostor received {p.decode(impostor.recv())}"
    after = fleet.workers()["BTCUSDT"]
    assert (after["state"], after["pid"], after["restarts"]) == ("RUNNING", worker["pid"], 0)
    assert _orders(fleet, IMPOSTOR_COID) == 0
    # Every order of the real worker was answered: what it believes it holds is the journal's.
    fleet.run("kill", "BTCUSDT", check=True)
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        unfinished = journal.execute(
            "SELECT count(*) FROM orders WHERE symbol = 'BTCUSDT' AND status IN "
            "('PENDING_NEW', 'NEW', 'PARTIALLY_FILLED')").fetchone()[0]
    assert unfinished == 0
    log = Home.at(fleet.home).orchestrator_log.read_text(errors="replace")
    assert "refused a worker registration" in log


def _token(directory: Path, pid: int) -> bytes:
    path = eventually(lambda: where(directory / f"token-{pid}", Path.exists),
                      what=f"the token of worker {pid}")
    return bytes.fromhex(path.read_text())


def _assert_nowhere(token: bytes, pid: int, fleet: FleetCli) -> None:
    """Not in the worker's (or any fleet process's) environment or argv, status, logs or
    journal, in any spelling."""
    spellings = [token, token.hex().encode(), base64.b64encode(token)]
    places = [Path(f"/proc/{pid}/environ").read_bytes(), Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert b"PATH=" in places[0]  # readable: the check means something
    for proc in fleet.processes():
        places += [Path(f"/proc/{proc.pid}/environ").read_bytes(),
                   Path(f"/proc/{proc.pid}/cmdline").read_bytes()]
    places.append(fleet.run("status", "--json", check=True).stdout.encode())
    places += [path.read_bytes() for path in (fleet.home / "logs").glob("*.log*")]
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        places.append("\n".join(journal.iterdump()).encode())
    for place in places:
        for spelling in spellings:
            assert spelling not in place


@pytest.mark.parametrize("spawn", ["forkserver", "exec"])
def test_a_restarted_worker_gets_a_new_token_and_the_old_one_is_refused(
        fleet: FleetCli, impostors: list[zmq.Socket[bytes]], tmp_path: Path,
        spawn: str) -> None:
    leaks = tmp_path / "leaks"
    leaks.mkdir()
    strategy = strategy_file(tmp_path, "leaker", LEAKER.format(directory=str(leaks)))
    fleet.run("up", "BTCUSDT", "--speed", "50", "-s", f"{strategy}:Leak",
              env=dict(os.environ, MULTIBOT_SPAWN=spawn), check=True)
    first = eventually(lambda: worker_running(fleet, "BTCUSDT"), timeout=30,
                       what="BTCUSDT running")
    old = _token(leaks, first["pid"])
    assert len(old) == p.WORKER_TOKEN_BYTES
    _assert_nowhere(old, first["pid"], fleet)
    impostor = _dealer(impostors, fleet)
    # The right token, from another connection: the worker registered already, on its own.
    reason = _refused(impostor, p.Register(symbol="BTCUSDT", pid=first["pid"], token=old))
    assert "another connection" in reason
    _refused(impostor, _buy())

    psutil.Process(first["pid"]).send_signal(signal.SIGKILL)
    second = eventually(lambda: worker_running(fleet, "BTCUSDT", not_pid=first["pid"]),
                        timeout=30, what="BTCUSDT restarted")
    new = _token(leaks, second["pid"])
    assert new != old
    _assert_nowhere(new, second["pid"], fleet)
    for pid in (second["pid"], first["pid"]):
        reason = _refused(impostor, p.Register(symbol="BTCUSDT", pid=pid, token=old))
        assert old.hex() not in reason
    _refused(impostor, _buy())
    assert _orders(fleet, IMPOSTOR_COID) == 0
    # the new worker is undisturbed: registered once, beating on
    bars = second["bars"]
    eventually(lambda: where(fleet.workers()["BTCUSDT"], lambda w: w["bars"] > bars + 3
                             and w["pid"] == second["pid"] and w["state"] == "RUNNING"),
               timeout=30, what="the restarted worker running on")
    log = Home.at(fleet.home).orchestrator_log.read_text(errors="replace")
    assert "not the token of its current worker" in log and old.hex() not in log
