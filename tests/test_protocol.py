"""The wire protocol: round trips, and any bytes give a typed error, never a crash."""

from __future__ import annotations

import time

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from multibot.market.bar import Bar
from multibot.market.orders import OrderType, Side
from multibot.wire import protocol as p

_text = st.text(max_size=40)
_decimal_text = st.decimals(min_value=0, max_value=10**9, places=8, allow_nan=False).map(str)
_bar = st.builds(
    Bar, symbol=st.sampled_from(["BTCUSDT", "ETHUSDT"]), open_time=st.integers(0, 2**53),
    close_time=st.integers(0, 2**53), open=st.floats(allow_nan=False),
    high=st.floats(allow_nan=False), low=st.floats(allow_nan=False),
    close=st.floats(allow_nan=False), volume=st.floats(allow_nan=False),
)
_order = st.builds(p.OrderView, client_order_id=_text, symbol=_text, side=st.sampled_from(
    ["BUY", "SELL"]), type=st.sampled_from(["MARKET", "LIMIT"]), quantity=_decimal_text,
    price=st.none() | _decimal_text, status=st.sampled_from(["NEW", "FILLED", "CANCELED"]))
_position = st.builds(p.PositionView, symbol=_text, qty=_decimal_text,
                      trades=st.integers(0, 2**62))

MESSAGES = st.one_of(
    st.builds(p.Ping),
    st.builds(p.Up, symbols=st.lists(_text, max_size=5), stake=_decimal_text,
              strategies=st.lists(st.builds(p.StrategySpec, name=_text, params=st.dictionaries(
                  _text, st.integers(-(2**63), 2**63 - 1) | st.booleans() | _text, max_size=3)),
        max_size=3)),
    st.builds(p.Kill, symbols=st.lists(_text, max_size=5), flatten=st.booleans()),
    st.builds(p.Down, flatten=st.booleans()),
    st.builds(p.Error, code=st.sampled_from([c.value for c in p.ErrorCode]), reason=_text),
    st.builds(p.PlaceOrder, client_order_id=_text, side=st.sampled_from(list(Side)),
              type=st.sampled_from(list(OrderType)),
              quantity=_decimal_text, price=st.none() | _decimal_text),
    st.builds(p.OrderUpdate, order=_order, position=_position),
    st.builds(p.WorkerHeartbeat, bars=st.integers(0, 2**62), last_error=_text),
    st.builds(p.BarMessage, bar=_bar),
    st.builds(p.Event, kind=st.sampled_from(p.EventKind), symbol=_text, detail=_text),
)


@given(MESSAGES)
def test_every_message_round_trips(message: p.Message) -> None:
    envelope, decoded = p.decode(p.encode(message, "abc"))
    assert decoded == message
    assert envelope.type == message.TYPE and envelope.id == "abc"
    assert envelope.v == p.PROTOCOL_VERSION and envelope.ts_ns > 0


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_any_bytes_decode_to_a_typed_error_or_a_message(data: bytes) -> None:
    try:
        p.decode(data)
    except p.ProtocolError as exc:
        assert exc.code in p.ErrorCode


@given(MESSAGES, st.integers(0, 200))
def test_truncated_messages_are_malformed(message: p.Message, cut: int) -> None:
    data = p.encode(message)
    cut = min(cut, len(data) - 1)
    with pytest.raises(p.ProtocolError):
        p.decode(data[:cut])


def _raw_envelope(v: object = 1, type_: object = "ping", body: object = None) -> bytes:
    return msgspec.msgpack.encode(
        {"v": v, "id": "id", "type": type_, "ts_ns": 0, "body": {} if body is None else body}
    )


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", p.ErrorCode.MALFORMED),
        (b"\xc1", p.ErrorCode.MALFORMED),
        (b"\x81\xa1\x80", p.ErrorCode.MALFORMED),  # a map key that is not UTF-8
        (msgspec.msgpack.encode({"v": 1}), p.ErrorCode.MALFORMED),
        (_raw_envelope(v=2), p.ErrorCode.BAD_VERSION),
        (msgspec.msgpack.encode({"v": 2, "shape": "new"}), p.ErrorCode.BAD_VERSION),
        (_raw_envelope(type_="launch_missiles"), p.ErrorCode.UNKNOWN_TYPE),
        (_raw_envelope(type_=7), p.ErrorCode.MALFORMED),
        (_raw_envelope(type_="kill", body={"symbols": "BTCUSDT"}), p.ErrorCode.BAD_BODY),
        (_raw_envelope(type_="kill", body={"symbols": [], "extra": 1}), p.ErrorCode.BAD_BODY),
        (_raw_envelope(type_="up", body={}), p.ErrorCode.BAD_BODY),
        (_raw_envelope(type_="place_order", body={"client_order_id": "mb-X-1", "side": "SHORT",
                                                  "type": "MARKET", "quantity": "1"}),
         p.ErrorCode.BAD_BODY),  # sides, order types and statuses are the enums' values only
        (b"\x00" * (p.MAX_MESSAGE_BYTES + 1), p.ErrorCode.TOO_LARGE),
    ],
)
def test_bad_input_gets_a_stable_code(data: bytes, code: p.ErrorCode) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(data)
    assert info.value.code == code


def test_unknown_types_are_not_remembered() -> None:
    # body decoders are made on first use: a peer's made-up type names must not pile up
    before = len(p._body_decoders)
    for i in range(100):
        with pytest.raises(p.ProtocolError) as info:
            p.decode(_raw_envelope(type_=f"made-up-{i}"))
        assert info.value.code == p.ErrorCode.UNKNOWN_TYPE
    assert len(p._body_decoders) == before
    assert p.body_decoder("ping") is p.body_decoder("ping")


def test_error_codes_are_stable() -> None:
    # scripts match on these strings: renaming one is a breaking change
    assert {c.value for c in p.ErrorCode} >= {
        "malformed", "bad_version", "unknown_type", "bad_body", "too_large", "not_allowed",
        "unknown_symbol", "not_running", "bad_config", "conflict", "timeout", "internal",
    }


def test_no_pickle_anywhere() -> None:
    import pathlib

    root = pathlib.Path(p.__file__).parent.parent
    for package in ("orchestrator", "worker", "strategies"):
        for path in (root / package).rglob("*.py"):
            assert "import pickle" not in path.read_text(), path


def test_unencodable_values_are_a_protocol_error() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.encode(p.Up(symbols=["BTCUSDT"], strategies=[p.StrategySpec(
            name="sma_cross", params={"fast": 2**70})]))
    assert info.value.code == p.ErrorCode.BAD_BODY


def _nested(depth: int, leaf: bytes = b"\xc0") -> bytes:
    return b"\x91" * depth + leaf  # msgpack: `depth` one-element arrays around a nil


@pytest.mark.parametrize("depth", [2_000, p.MAX_MESSAGE_BYTES - 64])
@pytest.mark.parametrize("where", ["body", "field", "whole"])
def test_deep_nesting_is_a_protocol_error_not_a_crash(depth: int, where: str) -> None:
    # msgspec stops a deep descent with RecursionError; a peer's 2 KB of nested arrays must
    # be refused like any other garbage, quickly, at any depth up to the size limit
    nested = _nested(depth)
    data = {"body": _raw_envelope(type_="status", body=msgspec.Raw(nested)),
            "field": _raw_envelope(type_="up", body=msgspec.Raw(b"\x81\xa7symbols" + nested)),
            "whole": nested}[where]
    started = time.monotonic()
    with pytest.raises(p.ProtocolError) as info:
        p.decode(data)
    assert info.value.code in (p.ErrorCode.MALFORMED, p.ErrorCode.BAD_BODY)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("type_", ["status", "up", "place_order"])
def test_a_map_with_100k_keys_is_refused_quickly(type_: str) -> None:
    keys = 100_000
    body = b"\xdf" + keys.to_bytes(4, "big") + b"".join(
        msgspec.msgpack.encode(f"{i:x}") + b"\xc0" for i in range(keys))
    data = _raw_envelope(type_=type_, body=msgspec.Raw(body))
    assert len(data) < p.MAX_MESSAGE_BYTES
    started = time.monotonic()
    with pytest.raises(p.ProtocolError) as info:
        p.decode(data)
    assert info.value.code == p.ErrorCode.BAD_BODY
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("header", [b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                                    b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"])
def test_a_container_claiming_4g_items_is_malformed(header: bytes) -> None:
    # a length prefix is never trusted with an allocation: the bytes must be there
    with pytest.raises(p.ProtocolError) as info:
        p.decode(_raw_envelope(type_="up", body=msgspec.Raw(b"\x81\xa7symbols" + header)))
    assert info.value.code == p.ErrorCode.MALFORMED


@settings(max_examples=300)
@given(st.recursive(st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=50),
       st.integers(0, 3_000), st.sampled_from(sorted(p.MESSAGE_TYPES)))
def test_any_nesting_in_any_body_gives_a_typed_error_or_a_message(
        shape: object, depth: int, type_: str) -> None:
    body = b"\x91" * depth + msgspec.msgpack.encode(shape)
    for data in (_raw_envelope(type_=type_, body=msgspec.Raw(body)), body):
        try:
            p.decode(data)
        except p.ProtocolError as exc:
            assert exc.code in p.ErrorCode
