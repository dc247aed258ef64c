"""The wire protocol: one versioned, typed envelope for every socket.

Every message is msgpack ``{v, id, type, ts_ns, body}``. ``decode`` validates everything
(size, shape, version, type, body fields) and raises ``ProtocolError`` with a stable
``ErrorCode`` and nothing else (deep nesting and huge containers included: the size limit
bounds the work); it never trusts wire data and never deserialises code objects.
Imported by the orchestrator, the worker and the CLI.
"""

from __future__ import annotations

import enum
import os
import time
from typing import Any, ClassVar

import msgspec

from multibot.errors import (  # re-exported: the wire's error replies carry these
    ErrorCode as ErrorCode,
    ProtocolError as ProtocolError,
)
from multibot.market.bar import Bar
from multibot.market.orders import OrderType, Side
from multibot.wire.records import (  # re-exported: one module for the wire
    HEARTBEAT_S as HEARTBEAT_S,
    PROTOCOL_VERSION as PROTOCOL_VERSION,
    ExchangeStatus as ExchangeStatus,
    FillView as FillView,
    OrchestratorStatus as OrchestratorStatus,
    OrderView as OrderView,
    PositionView as PositionView,
    StrategySpec as StrategySpec,
    SymbolPlan as SymbolPlan,
    SymbolRules as SymbolRules,
    WorkerConfig as WorkerConfig,
    WorkerStatus as WorkerStatus,
)

MAX_MESSAGE_BYTES = 1 << 20  # application limit: larger messages get a TOO_LARGE error reply
# Transport limits (ZMQ_MAXMSGSIZE): ZeroMQ drops a peer that sends a larger message, before
# buffering it. Each socket of the orchestrator accepts what its real traffic needs:
ZMQ_MAX_MESSAGE_BYTES = 4 << 20  # control sockets: above MAX_MESSAGE_BYTES, so it gets a reply
# broker socket: a worker's largest message is a heartbeat or goodbye carrying an error text
# of at most MAX_ERROR_CHARS (4 bytes each at most in UTF-8); the rest of it is small
BROKER_MAX_MESSAGE_BYTES = 64 << 10
MAX_ERROR_CHARS = 4000  # a worker's error text on the wire (heartbeat, goodbye) is cut to this
# market and events PUB sockets: a peer only sends subscriptions, "\x01" or "\x00" + a topic
# (a symbol of <= 20 characters and NUL, the heartbeat topic, or an event kind)
SUBSCRIPTION_MAX_BYTES = 64


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every message body; ``TYPE`` is the envelope's ``type``."""

    TYPE: ClassVar[str] = ""


# --- control socket (CLI -> orchestrator) ---------------------------------------------------


class Ping(Message, frozen=True, kw_only=True):
    TYPE = "ping"


class Pong(Message, frozen=True, kw_only=True):
    TYPE = "pong"
    pid: int
    home: str
    version: int = PROTOCOL_VERSION


class Up(Message, frozen=True, kw_only=True):
    TYPE = "up"
    symbols: list[str]
    strategies: list[StrategySpec] = []
    stake: str = "100"
    order_type: str = "MARKET"
    plans: dict[str, SymbolPlan] = {}  # per-symbol, overriding the three fields above
    wait_s: float = 30.0
    # what the caller expects of the fleet; "" = whatever runs. A mismatch is a CONFLICT.
    mode: str = ""
    feed: str = ""
    interval: str = ""
    speed: float = 0.0  # 0 = whatever runs
    # other fleet settings the caller gave (--seed, --max-restarts, --restart-window), as
    # text; a running fleet with other values refuses them (CONFLICT)
    fleet_given: dict[str, str] = {}
    # per symbol, the plan fields the caller gave (CLI or config file): a running symbol with
    # another value of one is a CONFLICT, not silently left as it runs
    plans_given: dict[str, list[str]] = {}


class SymbolResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    state: str
    pid: int | None = None
    error: str = ""


class UpResult(Message, frozen=True, kw_only=True):
    TYPE = "up_result"
    results: list[SymbolResult]


class Kill(Message, frozen=True, kw_only=True):
    TYPE = "kill"
    symbols: list[str]
    flatten: bool = False


class KillResult(Message, frozen=True, kw_only=True):
    TYPE = "kill_result"
    results: list[SymbolResult]


class Down(Message, frozen=True, kw_only=True):
    TYPE = "down"
    flatten: bool = False


class Status(Message, frozen=True, kw_only=True):
    TYPE = "status"


class Logs(Message, frozen=True, kw_only=True):
    """A log's last ``lines`` (``offset`` < 0), or what was appended after ``offset``."""

    TYPE = "logs"
    name: str  # a symbol, or "orchestrator"
    lines: int = 50
    offset: int = -1


class LogText(Message, frozen=True, kw_only=True):
    TYPE = "log_text"
    text: str
    offset: int  # where the next read of the same log starts


class StatusReport(Message, frozen=True, kw_only=True):
    TYPE = "status_report"
    orchestrator: OrchestratorStatus
    workers: list[WorkerStatus]


class Ok(Message, frozen=True, kw_only=True):
    TYPE = "ok"
    detail: str = ""


class Error(Message, frozen=True, kw_only=True):
    TYPE = "error"
    code: str
    reason: str


# --- broker socket (worker <-> orchestrator) ------------------------------------------------


WORKER_TOKEN_BYTES = 32  # a worker's secret token (Register.token)


class Register(Message, frozen=True, kw_only=True):
    TYPE = "register"
    symbol: str
    pid: int
    # the secret handed to this worker process alone when it was started (WORKER_TOKEN_BYTES
    # random bytes, never in argv or the environment): it proves this connection speaks for
    # the worker the orchestrator started. Never logged or shown.
    token: bytes


class Welcome(Message, frozen=True, kw_only=True):
    TYPE = "welcome"
    config: WorkerConfig
    rules: SymbolRules
    position: PositionView
    open_orders: list[OrderView]
    next_seq: int
    history: list[Bar]
    # open time of the newest bar this symbol already acted on (journaled with its intent):
    # a bar at or before it is never acted on again, across worker and orchestrator restarts
    last_decision_bar: int | None = None


class WorkerHeartbeat(Message, frozen=True, kw_only=True):
    TYPE = "worker_heartbeat"
    bars: int = 0
    last_bar_time: int | None = None
    last_close: float | None = None
    position: str = "0"  # what the worker believes it holds
    foreign_bars: int = 0  # bars of another symbol that reached it (must stay 0)
    duplicate_bars: int = 0  # live bars not newer than the last live bar (must stay 0)
    strategy_errors: int = 0
    last_error: str = ""


class OrchestratorHeartbeat(Message, frozen=True, kw_only=True):
    TYPE = "orchestrator_heartbeat"


class PlaceOrder(Message, frozen=True, kw_only=True):
    TYPE = "place_order"
    client_order_id: str
    side: Side
    type: OrderType
    quantity: str
    price: str | None = None
    # open time of the bar whose decision this order carries out (journaled with the intent:
    # one decision per symbol per bar, ever); None only from peers that predate it
    bar_time: int | None = None
    # True: another try at an exit the strategy already decided (the previous one expired,
    # was rejected or left a remainder), not a new decision. Only SELLs may be retried.
    exit_retry: bool = False


class CancelOrder(Message, frozen=True, kw_only=True):
    TYPE = "cancel_order"
    client_order_id: str


class OrderUpdate(Message, frozen=True, kw_only=True):
    TYPE = "order_update"
    order: OrderView
    fills: list[FillView] = []
    position: PositionView


class StopWorker(Message, frozen=True, kw_only=True):
    TYPE = "stop_worker"
    flatten: bool = False


class Goodbye(Message, frozen=True, kw_only=True):
    TYPE = "goodbye"
    reason: str = ""


# --- PUB sockets ----------------------------------------------------------------------------


class BarMessage(Message, frozen=True, kw_only=True):
    TYPE = "bar"
    bar: Bar


class EventKind(enum.StrEnum):
    """What an event is about; also its topic on the events socket."""

    STATE = "state"  # a worker's supervision state changed
    FILL = "fill"  # an order (partly) filled
    ORDER = "order"  # an order ended unfilled: rejected, canceled, expired
    ERROR = "error"  # in the documented vocabulary; nothing in the fleet publishes it
    FLEET = "fleet"  # the orchestrator itself: started, stopped, trading halted or resumed


class Event(Message, frozen=True, kw_only=True):
    TYPE = "event"
    kind: EventKind
    symbol: str = ""
    detail: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Ping, Pong, Up, UpResult, Kill, KillResult, Down, Status, StatusReport, Ok, Error,
        Logs, LogText,
        Register, Welcome, WorkerHeartbeat, OrchestratorHeartbeat, PlaceOrder, CancelOrder,
        OrderUpdate, StopWorker, Goodbye, BarMessage, Event,
    )
}


class Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    id: str
    type: str
    ts_ns: int
    body: msgspec.Raw


class _VersionOnly(msgspec.Struct):
    v: int


_encoder = msgspec.msgpack.Encoder()
_version_decoder = msgspec.msgpack.Decoder(_VersionOnly)
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
# Made on first use: a CLI command decodes one or two types and should not pay for all of
# them at start-up (orchestrator.preload builds them all once, shared by every worker).
_body_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {}


def body_decoder(message_type: str) -> msgspec.msgpack.Decoder[Any] | None:
    """The body decoder of a known message type (made once), else None."""
    decoder = _body_decoders.get(message_type)
    if decoder is None:
        cls = MESSAGE_TYPES.get(message_type)
        if cls is None:
            return None  # not cached: a peer's unknown names must not grow the dict
        decoder = _body_decoders[message_type] = msgspec.msgpack.Decoder(cls)
    return decoder


def client_order_id(symbol: str, seq: int) -> str:
    """The deterministic id of a symbol's ``seq``-th order (<= 36 chars, as Binance allows),
    so a resend after a restart is recognisable."""
    return f"mb-{symbol}-{seq}"


def new_id() -> str:
    return os.urandom(8).hex()


def encode(message: Message, msg_id: str | None = None) -> bytes:
    try:
        body = _encoder.encode(message)
    except (OverflowError, TypeError) as exc:  # e.g. an int beyond 64 bits
        raise ProtocolError(ErrorCode.BAD_BODY, f"cannot encode {message.TYPE!r}: {exc}") from None
    envelope = Envelope(
        PROTOCOL_VERSION, msg_id or new_id(), message.TYPE, time.time_ns(), msgspec.Raw(body)
    )
    return _encoder.encode(envelope)


# --- the market PUB: one frame per message, "<topic>\0<envelope>" ---------------------------
# One frame, not [topic, payload]: a zmq send or recv per bar instead of two. SUB filters on
# the frame's prefix, so a worker subscribes to b"SYMBOL\0" and to HEARTBEAT_TOPIC.

HEARTBEAT_TOPIC = b"\0"  # no symbol starts with NUL: every worker takes these
# an exec'd worker's end of a pipe only the orchestrator writes to: it first carries the
# worker's token (WORKER_TOKEN_BYTES), then its EOF says the orchestrator died
PARENT_FD_ENV = "MULTIBOT_PARENT_FD"
MARKET_HWM = 100_000  # market PUB's SNDHWM and each worker SUB's RCVHWM: a burst is not dropped


def market_topic(symbol: str) -> bytes:
    return symbol.encode() + b"\0"


def encode_bar(bar: Bar) -> bytes:
    """The market frame of one bar (no per-message random id: nobody replies to a bar)."""
    body = msgspec.Raw(_encoder.encode(BarMessage(bar=bar)))
    envelope = Envelope(PROTOCOL_VERSION, "", BarMessage.TYPE, time.time_ns(), body)
    return market_topic(bar.symbol) + _encoder.encode(envelope)


def heartbeat_frame() -> bytes:
    """The orchestrator's heartbeat, every HEARTBEAT_S to every worker at once."""
    return HEARTBEAT_TOPIC + encode(OrchestratorHeartbeat(), "")


def decode_market(frame: bytes) -> tuple[bytes, Message]:
    """(topic, message) of a market frame; ProtocolError if it is not one."""
    cut = frame.find(b"\0")
    if cut < 0:
        raise ProtocolError(ErrorCode.MALFORMED, "a market frame starts with its topic and NUL")
    _, message = decode(frame[cut + 1:])
    return frame[:cut + 1], message


def decode_envelope(data: bytes) -> Envelope:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        envelope = _envelope_decoder.decode(data)
    except Exception as exc:
        _check_version(data)  # another version may shape its envelope differently
        raise ProtocolError(ErrorCode.MALFORMED,
                            f"not a protocol envelope: {_why(exc)}") from None
    _check_version_number(envelope.v)
    return envelope


def _why(exc: Exception) -> str:
    """What went wrong decoding a peer's bytes, in words that do not depend on the stack.

    msgspec refuses nesting deeper than the interpreter's recursion limit with a
    RecursionError after a bounded descent; a peer's 2 KB of nested arrays gets there."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "too large to decode"
    if isinstance(exc, msgspec.MsgspecError | UnicodeDecodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _check_version(data: bytes) -> None:
    try:
        version = _version_decoder.decode(data).v
    except Exception:  # not even a version: the caller's MALFORMED stands
        return
    _check_version_number(version)


def _check_version_number(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol version {version} is not supported (this side speaks "
            f"{PROTOCOL_VERSION})",
        )


def decode_body(envelope: Envelope) -> Message:
    decoder = body_decoder(envelope.type)
    if decoder is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {envelope.type!r}")
    try:
        message: Message = decoder.decode(envelope.body)
    except Exception as exc:
        raise ProtocolError(ErrorCode.BAD_BODY,
                            f"bad {envelope.type!r} body: {_why(exc)}") from None
    return message


def decode(data: bytes) -> tuple[Envelope, Message]:
    """Decode and validate one message; raises ProtocolError, never anything else."""
    envelope = decode_envelope(data)
    return envelope, decode_body(envelope)


def error_reply(error: ProtocolError) -> Error:
    return Error(code=error.code.value, reason=error.reason)
