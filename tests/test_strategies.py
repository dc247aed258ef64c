"""Tests for strategies/: base, indicators, built-ins, registry and combiner."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, strategies as st

from multibot.market.bar import HISTORY_LIMIT, Bar, Signal
from multibot.market.times import iso
from strategies import registry
from strategies.base import INTERFACE_VERSION, Strategy, StrategyError, safe_on_bar
from strategies.combine import Combiner
from strategies.ema_cross import EmaCross
from strategies.indicators import EMA, SMA, Crossover
from strategies.sma_cross import SmaCross, SmaCrossParams
from tests.strategy_support import (
    BUILTIN_NAMES,
    FLAT,
    LONG,
    closes,
    load_bars,
    run,
    sma_reference,
)


def ema_reference(x: np.ndarray, period: int) -> np.ndarray:
    alpha = 2.0 / (period + 1)
    out = [float(np.mean(x[:period]))]
    for v in x[period:]:
        out.append(out[-1] + alpha * (v - out[-1]))
    return np.array(out)


def feed(ind: SMA | EMA, x: np.ndarray) -> np.ndarray:
    out = [ind.update(float(v)) for v in x]
    assert all(v is None for v in out[: ind.period - 1])
    return np.array(out[ind.period - 1 :], dtype=float)


# --- indicators ---------------------------------------------------------------------------


@pytest.mark.parametrize("period", [1, 2, 10, 30, 200])
def test_sma_matches_numpy_on_real_closes(period: int) -> None:
    x = closes()
    got = feed(SMA(period), x)
    np.testing.assert_allclose(got, sma_reference(x, period), rtol=1e-9, atol=0)


@pytest.mark.parametrize("period", [1, 2, 12, 26, 200])
def test_ema_matches_sma_seeded_loop_on_real_closes(period: int) -> None:
    x = closes()
    got = feed(EMA(period), x)
    np.testing.assert_allclose(got, ema_reference(x, period), rtol=1e-9, atol=0)


def test_sma_has_no_drift_over_40000_bars_or_after_huge_values() -> None:
    x = [float(v) for v in closes()]
    huge = [1e15 + i for i in range(1000)] + [1.0 + i * 1e-3 for i in range(200)]
    assert len(x) >= 40_000
    for data, period in ((x, 20), (huge, 50)):
        sma = SMA(period)
        for v in data:
            sma.update(v)
        assert sma.count == len(data)
        assert sma.value == pytest.approx(math.fsum(data[-period:]) / period, rel=1e-12)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.integers(1, 40),
)
def test_sma_property_equals_window_mean(data: list[float], period: int) -> None:
    sma = SMA(period)
    for i, v in enumerate(data):
        got = sma.update(v)
        if i + 1 < period:
            assert got is None and not sma.ready
        else:
            exact = math.fsum(data[i + 1 - period : i + 1]) / period
            assert got == pytest.approx(exact, rel=1e-9, abs=1e-6)


def test_indicator_ready_value_reset_and_bad_input() -> None:
    ema = EMA(3)
    assert not ema.ready and ema.value is None
    assert ema.update(1.0) is None and ema.update(2.0) is None
    assert ema.update(3.0) == 2.0 and ema.ready
    assert ema.update(4.0) == pytest.approx(3.0)
    ema.reset()
    assert not ema.ready and ema.count == 0
    with pytest.raises(ValueError, match="non-finite"):
        SMA(3).update(math.nan)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="period"):
            SMA(bad)


def test_crossover_events_alternate() -> None:
    cross = Crossover()
    events = [cross.update(a, b) for a, b in [(1, 2), (2, 2), (3, 2), (4, 2), (2, 2), (3, 2)]]
    assert events == [0, 0, 1, 0, -1, 1]


# --- factory / isolation ------------------------------------------------------------------


def test_factory_returns_fresh_independent_instances() -> None:
    a, b = registry.create("sma_cross"), registry.create("sma_cross")
    assert a is not b and isinstance(a, SmaCross) and isinstance(b, SmaCross)
    assert a.fast is not b.fast and a.slow is not b.slow
    run(a, load_bars("BTCUSDT")[:500])
    run(b, load_bars("ETHUSDT")[:500])
    assert a.fast.value is not None and b.fast.value is not None
    assert a.fast.value != b.fast.value
    assert a.fast.value == pytest.approx(float(np.mean(closes("BTCUSDT")[490:500])))
    assert b.fast.value == pytest.approx(float(np.mean(closes("ETHUSDT")[490:500])))
    fresh = registry.create("sma_cross")
    assert fresh.fast.value is None and fresh.fast.count == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_factory_gives_fresh_isolated_instances(name: str) -> None:
    a, b = registry.create(name), registry.create(name)
    assert a is not b and type(a) is type(b) and a.params == b.params
    immutable = (bool, int, float, str, type(None), msgspec.Struct)  # frozen Params included
    shared = [k for k, v in vars(a).items() if v is vars(b)[k] and not isinstance(v, immutable)]
    assert not shared, f"instances share state: {shared}"
    btc, eth = load_bars("BTCUSDT")[:3000], load_bars("ETHUSDT")[:3000]
    interleaved: tuple[list[Signal | None], list[Signal | None]] = ([], [])
    for bar_a, bar_b in zip(btc, eth, strict=True):
        interleaved[0].append(a.on_bar(bar_a))
        interleaved[1].append(b.on_bar(bar_b))
    alone = []
    for bars in (btc, eth):
        solo = registry.create(name)
        alone.append([solo.on_bar(x) for x in bars])
    assert list(interleaved) == alone  # running side by side changed nothing
    assert LONG in alone[0] and LONG in alone[1]


LEAKY = """
from strategies.base import Params, Strategy
from multibot.market.bar import HISTORY_LIMIT, Bar, Signal


class LeakyParams(Params):
    threshold: float = 0.0


class Leaky(Strategy):  # deliberately keeps state in a mutable class attribute
    name = "leaky"
    Params = LeakyParams
    seen: list[float] = []

    @property
    def warmup(self) -> int:
        return 1

    def on_bar(self, bar: Bar) -> Signal | None:
        self.seen.append(bar.close)
        return Signal.LONG if bar.close > self.params.threshold else Signal.FLAT
"""


def test_leaky_user_strategy_loads_from_file_ref(tmp_path: Path) -> None:
    path = tmp_path / "my_leaky.py"
    path.write_text(LEAKY)
    ref, params = registry.parse_spec(f"{path}:Leaky:threshold=1e9")
    assert (ref, params) == (f"{path}:Leaky", {"threshold": 1e9})
    cls = registry.load_strategy_class(ref)
    assert cls.name == "leaky" and registry.load_strategy_class(ref) is cls
    a, b = registry.create(ref, params), registry.create(ref, {"threshold": 0})
    assert a is not b and a.params != b.params
    bar = load_bars("BTCUSDT")[0]
    assert safe_on_bar(a, bar) is FLAT and safe_on_bar(b, bar) is LONG
    # Class attributes are shared inside one process (plain Python): isolation between
    # symbols comes from one process per symbol, and built-ins keep state on the instance.
    assert a.seen is b.seen and len(a.seen) == 2  # type: ignore[attr-defined]
    assert registry.describe(cls) == [("threshold", "float", 0.0)]


def test_broken_user_files_and_bad_refs_give_strategy_errors(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(StrategyError, match="boom at import"):
        registry.load_strategy_class(f"{bad}:X")
    notstrat = tmp_path / "plain.py"
    notstrat.write_text("class X:\n    pass\n")
    with pytest.raises(StrategyError, match="not a Strategy subclass"):
        registry.load_strategy_class(f"{notstrat}:X")
    with pytest.raises(StrategyError, match="has no attribute 'Nope'"):
        registry.load_strategy_class(f"{notstrat}:Nope")
    with pytest.raises(StrategyError, match="does not exist"):
        registry.load_strategy_class(f"{tmp_path}/missing.py:X")
    with pytest.raises(StrategyError, match=r"cannot import module 'no_such_pkg\.mod'"):
        registry.load_strategy_class("no_such_pkg.mod:X")
    with pytest.raises(StrategyError, match="abstract; it must implement: on_bar, warmup"):
        registry.load_strategy_class("strategies.base:Strategy")
    assert registry.load_strategy_class("strategies.sma_cross:SmaCross") is SmaCross


def test_a_module_that_never_names_the_class_is_not_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-s this:X` must not execute an unrelated module to learn it has no X."""
    ran = tmp_path / "ran"
    (tmp_path / "side_effects.py").write_text(
        f"open({str(ran)!r}, 'w').close()\nclass Other:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(StrategyError, match=r"module 'side_effects' does not define 'Nope' "
                       r"\(not imported\)"):
        registry.load_strategy_class("side_effects:Nope")
    assert not ran.exists()
    with pytest.raises(StrategyError, match="does not define 'X'"):
        registry.load_strategy_class("this:X")  # the Zen of Python is not printed
    with pytest.raises(StrategyError, match="not a Strategy subclass"):
        registry.load_strategy_class("side_effects:Other")  # named: imported, then checked
    assert ran.exists()


def test_safe_on_bar_wraps_exceptions_and_bad_returns() -> None:
    class Boom(Strategy):
        name = "boom"
        warmup = 0

        def on_bar(self, bar: Bar) -> Signal | None:
            if bar.close > 0:
                raise ZeroDivisionError("oops")
            return "long"  # type: ignore[return-value]

        def on_fill(self, side: str, qty: float, price: float) -> None:
            self.last_fill = (side, qty, price)

    bar = load_bars("BTCUSDT")[0]
    with pytest.raises(StrategyError, match=r"'boom' raised in on_bar for BTCUSDT.*oops") as raised:
        safe_on_bar(Boom(), bar)
    assert f"on the bar of {iso(bar.open_time)}: " in str(raised.value)  # UTC, not ms
    assert str(bar.open_time) not in str(raised.value)
    with pytest.raises(StrategyError, match=r"expected Signal\.LONG"):
        safe_on_bar(Boom(), msgspec.structs.replace(bar, close=-1.0))
    s = Boom()
    s.on_start()
    s.on_fill("BUY", 1.0, 2.0)
    s.on_stop()
    assert s.last_fill == ("BUY", 1.0, 2.0)


# --- errors for CLI users -----------------------------------------------------------------


def test_error_messages_name_strategy_and_what_is_available() -> None:
    with pytest.raises(StrategyError, match="unknown strategy 'smacross'") as e:
        registry.create("smacross")
    assert "did you mean 'sma_cross'" in str(e.value)
    assert "bollinger, ema_cross, macd_cross, rsi_revert, sma_cross;" in str(e.value)
    with pytest.raises(StrategyError, match="'sma_cross' has no parameter 'fsat'") as e:
        registry.create("sma_cross", {"fsat": 5})
    assert "fast: int = 10, slow: int = 30" in str(e.value)
    with pytest.raises(StrategyError, match="'sma_cross': bad value for parameter 'fast'"):
        registry.create("sma_cross", {"fast": "five"})
    with pytest.raises(StrategyError, match=r"parameter 'slow'.*Expected `int`, got `float`"):
        registry.create("sma_cross", {"slow": 20.5})
    with pytest.raises(StrategyError, match=r"'ema_cross': fast \(26\) must be less than slow"):
        registry.create("ema_cross", {"fast": 26})
    with pytest.raises(StrategyError, match=r"fast \(30\) must be less than slow \(30\)"):
        SmaCross(SmaCrossParams(fast=30, slow=30))
    with pytest.raises(StrategyError, match="fast must be an int >= 1"):
        registry.create("sma_cross", {"fast": 0})
    with pytest.raises(StrategyError, match="expects parameters of type SmaCrossParams"):
        SmaCross(EmaCross.Params())  # type: ignore[arg-type]
    with pytest.raises(StrategyError, match="'sma_cross' is a built-in strategy"):
        registry.create("sma_cross:fast")


PERIODS = [("sma_cross", "fast"), ("sma_cross", "slow"), ("ema_cross", "fast"),
           ("ema_cross", "slow"), ("macd_cross", "fast"), ("macd_cross", "slow"),
           ("macd_cross", "signal"), ("rsi_revert", "period"), ("bollinger", "period")]


@pytest.mark.parametrize(("name", "key"), PERIODS)
def test_periods_are_bounded_by_the_history_a_worker_keeps(name: str, key: str) -> None:
    """A period a worker could never warm up on is refused before anything is allocated:
    slow=100000000 would build a window of 100 million slots in the orchestrator and the
    worker."""
    for huge in (HISTORY_LIMIT + 1, 100_000_000):
        with pytest.raises(StrategyError, match=rf"strategy '{name}': {key} must be at most "
                           rf"{HISTORY_LIMIT} \(the bars of history a worker keeps\), "
                           rf"got {huge}"):
            registry.create(name, {key: huge})
    at_bound = {key: HISTORY_LIMIT} if key != "fast" else {"fast": HISTORY_LIMIT - 1,
                                                          "slow": HISTORY_LIMIT}
    registry.create(name, at_bound)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sma_cross", ("sma_cross", {})),
        ("  sma_cross  ", ("sma_cross", {})),
        ("sma_cross:fast=5,slow=20", ("sma_cross", {"fast": 5, "slow": 20})),
        ("sma_cross: fast = 5 , slow=20", ("sma_cross", {"fast": 5, "slow": 20})),
        ("path/to/my.py:MyStrat:fast=5", ("path/to/my.py:MyStrat", {"fast": 5})),
        ("path/to/my.py:MyStrat", ("path/to/my.py:MyStrat", {})),
        ("pkg.mod:Cls", ("pkg.mod:Cls", {})),
        (
            "pkg.mod:Cls:x=1.5,on=TRUE,off=false,s=hi",
            ("pkg.mod:Cls", {"x": 1.5, "on": True, "off": False, "s": "hi"}),
        ),
        ("C:\\strats\\my.py:S:n=-3", ("C:\\strats\\my.py:S", {"n": -3})),
    ],
)
def test_parse_spec(text: str, expected: tuple[str, dict[str, object]]) -> None:
    ref, params = registry.parse_spec(text)
    assert (ref, params) == expected
    assert [type(v) for v in params.values()] == [type(v) for v in expected[1].values()]


MALFORMED = ["", "  ", ":", "sma_cross:", ":fast=1", "sma_cross:fast=", "sma_cross:=5"]
MALFORMED += ["sma_cross:fast=1,,slow=2", "sma_cross:fast=5:slow=20", "sma_cross:fast=1,fast=2"]


@pytest.mark.parametrize("text", [*MALFORMED, "sma_cross:1x=2"])
def test_parse_spec_rejects_malformed(text: str) -> None:
    with pytest.raises(StrategyError, match="strategy spec"):
        registry.parse_spec(text)


def test_builtins_describe_and_interface_version() -> None:
    assert INTERFACE_VERSION == 1
    found = registry.builtins()
    assert list(found) == sorted(found) == BUILTIN_NAMES
    assert found["sma_cross"] is SmaCross and found["ema_cross"] is EmaCross
    assert registry.describe(SmaCross) == [("fast", "int", 10), ("slow", "int", 30)]
    assert registry.describe(EmaCross) == [("fast", "int", 12), ("slow", "int", 26)]
    assert all(cls.description for cls in found.values())


def test_package_exports_resolve_on_first_use() -> None:
    """`from strategies import X` loads X's module only then; every exported name exists."""
    import strategies

    for name in strategies.__all__:
        assert getattr(strategies, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        strategies.Nope  # noqa: B018 - the attribute access is the test


# --- combiner -----------------------------------------------------------------------------


def targets(n: int, updates: list[tuple[int, Signal | None]]) -> list[Signal]:
    combiner, out = Combiner(n), []
    for index, signal in updates:
        combiner.update(index, signal)
        out.append(combiner.target)
    return out


def test_combiner_majority_ties_and_single_strategy() -> None:
    assert Combiner(1).target is FLAT
    assert targets(1, [(0, LONG), (0, None), (0, FLAT), (0, None)]) == [LONG, LONG, FLAT, FLAT]
    # 4 strategies: 2 LONG is a tie (not strictly more than half) -> FLAT; 3 LONG -> LONG;
    # repeating a stance does not count twice.
    four = [(0, LONG), (1, LONG), (2, LONG), (2, LONG), (1, FLAT), (3, None)]
    assert targets(4, four) == [FLAT, FLAT, LONG, LONG, FLAT, FLAT]
    assert targets(2, [(0, LONG), (1, LONG), (0, FLAT)]) == [FLAT, LONG, FLAT]
    assert targets(3, [(0, LONG), (2, LONG), (1, LONG), (0, FLAT)]) == [FLAT, LONG, LONG, LONG]
    combiner = Combiner(3)
    combiner.update(1, LONG)
    assert combiner.stances == (FLAT, LONG, FLAT) and len(combiner) == 3
    with pytest.raises(IndexError, match="out of range for 3 strategies"):
        combiner.update(3, LONG)
    with pytest.raises(ValueError, match="at least one strategy"):
        Combiner(0)


UPDATES = st.lists(st.tuples(st.integers(0, 6), st.sampled_from([LONG, FLAT, None])), max_size=50)


@given(st.integers(1, 7), UPDATES)
def test_combiner_property_recount(n: int, updates: list[tuple[int, Signal | None]]) -> None:
    stances = [FLAT] * n
    for (i, s), got in zip(updates, targets(n, [(i % n, s) for i, s in updates]), strict=True):
        stances[i % n] = s or stances[i % n]
        assert got is (LONG if sum(x is LONG for x in stances) > n / 2 else FLAT)
