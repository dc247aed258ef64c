"""The other end of the floor and fan-out measurements, as separate OS processes.

    python -m bench.peers echo ENDPOINT
    python -m bench.peers sub ENDPOINT REPORT TOPIC raw|decode RCVHWM

Only the stdlib is imported at module level; each role imports what it needs, so a peer pays
for exactly the work it stands for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

PROBE = b"P"  # fan-out: "are you subscribed?" (acknowledged once)
END = b"E"  # fan-out: "that was the last bar" (the subscriber reports and exits)
HELLO = b"H"
BYE = b"B"
_SILENCE_MS = 30_000  # a peer whose benchmark died exits by itself


def echo(endpoint: str) -> int:
    """Floor of a round trip: DEALER that sends every message straight back, untouched."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, _SILENCE_MS)
    sock.connect(endpoint)
    sock.send(HELLO)
    try:
        while (payload := sock.recv()) != BYE:
            sock.send(payload)
    except zmq.Again:
        return 1
    finally:
        ctx.destroy(linger=0)
    return 0


def _validator(mode: str, topic: str) -> Callable[[bytes], bool] | None:
    """"decode": what a worker does with a market frame (multibot.wire.protocol.decode_market
    and the checks of worker/main.py)."""
    if mode != "decode":
        return None
    from multibot.wire.protocol import BarMessage, ProtocolError, decode_market

    def valid(frame: bytes) -> bool:
        try:
            _topic, message = decode_market(frame)
        except ProtocolError:
            return False
        return isinstance(message, BarMessage) and message.bar.symbol == topic

    return valid


def subscribe(endpoint: str, report: str, topic: str, mode: str, hwm: int) -> int:
    """One fan-out subscriber: counts the market frames of its topic (decoding them in
    "decode" mode, as a worker does) and reports the count and the monotonic time of the last
    one. A frame is "<topic>\\0<payload>", as on the fleet's market socket."""
    import zmq

    valid = _validator(mode, topic)
    symbol = topic.encode()
    prefix = len(symbol) + 1
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, hwm)
    sub.setsockopt(zmq.RCVTIMEO, _SILENCE_MS)
    sub.setsockopt(zmq.SUBSCRIBE, symbol + b"\0")
    sub.connect(endpoint)
    out = ctx.socket(zmq.PUSH)
    out.setsockopt(zmq.LINGER, 2000)
    out.connect(report)
    received = errors = 0
    first_ns = last_ns = 0
    acked = False
    recv = sub.recv
    try:
        while True:
            frame = recv()
            marker = frame[prefix:] if len(frame) == prefix + 1 else b""
            if marker == PROBE:
                if not acked:
                    acked = True
                    out.send(b"ack " + symbol)
                continue
            if marker == END:
                break
            if valid is not None and not valid(frame):
                errors += 1
            last_ns = time.monotonic_ns()
            if not received:
                first_ns = last_ns
            received += 1
    except zmq.Again:
        errors += 1  # never got the end marker: report what arrived
    out.send(b"res " + json.dumps({"topic": topic, "received": received, "errors": errors,
                                    "first_ns": first_ns, "last_ns": last_ns}).encode())
    ctx.destroy(linger=2000)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("echo").add_argument("endpoint")
    sub = roles.add_parser("sub")
    for name in ("endpoint", "report", "topic", "mode"):
        sub.add_argument(name)
    sub.add_argument("hwm", type=int)
    args = parser.parse_args(argv)
    if args.role == "echo":
        return echo(args.endpoint)
    return subscribe(args.endpoint, args.report, args.topic, args.mode, args.hwm)


if __name__ == "__main__":
    sys.exit(main())
