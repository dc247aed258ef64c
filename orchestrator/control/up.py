"""`up`: start symbols (hot-add to a running fleet): market data, rules, reconciliation with
the exchange, then a supervised worker each; the reply waits until they run (or ``wait_s``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from multibot.market.records import SymbolRules
from multibot.market.rules import price_decimal
from multibot.wire.protocol import (
    ErrorCode,
    ProtocolError,
    SymbolPlan,
    SymbolResult,
    Up,
    UpResult,
    WorkerConfig,
)
from multibot.wire.settings import (
    DEFAULT_PLAN,
    FLEET_GIVEN,
    Feed,
    SettingsError,
    fleet_value,
)
from orchestrator.broker.base import NotReconciled
from orchestrator.control.base import Command, ControlPorts, checked_symbols, symbol_result
from orchestrator.feeds.base import FeedError, UnknownSymbol
from orchestrator.plans import bundled_market, check_plan, check_stake
from orchestrator.supervisor import ACTIVE, State


@dataclass(frozen=True)
class PlannedUp:
    """An `up` request checked: its symbols in order, each one's worker config and warmup."""

    symbols: list[str]
    workers: dict[str, tuple[WorkerConfig, int]]
    wait_s: float


class UpCommand(Command[Up, PlannedUp]):
    request = Up

    def __init__(self, ports: ControlPorts) -> None:
        super().__init__(ports)
        self._preparing: set[str] = set()  # symbols between `up` and their start

    def validate(self, request: Up) -> PlannedUp:
        self._check_matches_fleet(request)
        symbols = checked_symbols(request.symbols)
        unknown = []
        for symbol in symbols:
            try:
                self.ports.trading.feed.validate(symbol)
            except UnknownSymbol as exc:
                unknown.append(str(exc))
        if unknown:
            raise ProtocolError(ErrorCode.UNKNOWN_SYMBOL, "; ".join(unknown))
        settings = self.ports.settings
        workers = {symbol: _worker(request, symbol, bundled_market(symbol, settings.interval)
                                   if settings.feed == Feed.REPLAY else None)
                   for symbol in symbols}
        self._check_matches_running(request, {s: config for s, (config, _) in workers.items()})
        return PlannedUp(symbols=symbols, wait_s=request.wait_s, workers=workers)

    def _check_matches_fleet(self, up: Up) -> None:
        settings = self.ports.settings
        for option, asked, running in (("mode", up.mode, settings.mode),
                                       ("feed", up.feed, settings.feed),
                                       ("interval", up.interval, settings.interval),
                                       ("speed", up.speed and f"{up.speed:g}",
                                        f"{settings.speed:g}")):
            if asked and asked != running:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"the running fleet uses --{option} {running}, not {asked}; "
                    "run `multibot down` first to change it",
                )
        for key, asked in up.fleet_given.items():
            running = fleet_value(settings, key) if key in FLEET_GIVEN else asked
            if asked != running:
                raise ProtocolError(
                    ErrorCode.CONFLICT,
                    f"the running fleet uses --{key.replace('_', '-')} {running}, not {asked}; "
                    "run `multibot down` first to change it",
                )

    def _check_matches_running(self, up: Up, configs: dict[str, WorkerConfig]) -> None:
        """A symbol that runs keeps its plan: asking it for another is a CONFLICT."""
        differences = []
        for symbol, config in configs.items():
            handle = self.ports.supervisor.handles.get(symbol)
            if handle is None or handle.state not in ACTIVE | {State.STOPPING}:
                continue  # started with the plan asked for
            for option in up.plans_given.get(symbol, ()):
                running, asked = _plan_text(handle.config, option), _plan_text(config, option)
                if running != asked:
                    differences.append(f"{symbol} runs with {running}, not {asked}")
        if differences:
            symbols = " ".join(sorted({d.split(" ", 1)[0] for d in differences}))
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"{'; '.join(differences)}; run `multibot kill {symbols}` first to change it",
            )

    async def execute(self, checked: PlannedUp) -> UpResult:
        supervisor = self.ports.supervisor
        results: dict[str, SymbolResult] = {}
        started: list[str] = []
        for symbol in checked.symbols:
            handle = supervisor.handles.get(symbol)
            if handle is not None and handle.state in ACTIVE | {State.STOPPING}:
                results[symbol] = symbol_result(handle, f"already {handle.state.value.lower()}")
                continue
            if symbol in self._preparing:  # another `up` of it is reconciling right now
                results[symbol] = SymbolResult(symbol=symbol, state=State.STARTING.value,
                                               error="already being started")
                continue
            config, warmup = checked.workers[symbol]
            self._preparing.add(symbol)
            try:
                refusal = await self._prepare(symbol, Decimal(config.stake))
            finally:
                self._preparing.discard(symbol)
            if refusal:
                results[symbol] = symbol_result(supervisor.refuse(symbol, config, warmup,
                                                                  refusal))
                continue
            await supervisor.start(symbol, config, warmup)
            started.append(symbol)
        waited = await asyncio.gather(
            *(supervisor.wait_started(symbol, checked.wait_s) for symbol in started)
        )
        for handle in waited:
            results[handle.symbol] = symbol_result(handle)
        return UpResult(results=[results[s] for s in checked.symbols])

    async def _prepare(self, symbol: str, stake: Decimal) -> str:
        """Market data, rules and (on an exchange) reconciliation; why it cannot trade, or ""."""
        trading = self.ports.trading
        try:
            rules = await trading.feed.add(symbol)
        except FeedError as exc:
            return f"no market data: {exc}"
        latest = trading.feed.history(symbol, 1)
        try:  # the first time the rules and a price are known on every feed
            if latest:
                check_stake(symbol, stake, rules, price_decimal(latest[-1].close))
        except SettingsError as exc:
            trading.feed.remove(symbol)
            return str(exc)
        trading.rules[symbol] = rules
        trading.broker.add_rules(rules)
        try:
            await trading.broker.reconcile(symbol)
        except NotReconciled as exc:
            trading.feed.remove(symbol)
            return f"not reconciled with the exchange: {exc}"
        return ""


def _worker(up: Up, symbol: str,
            market: tuple[SymbolRules, Decimal] | None) -> tuple[WorkerConfig, int]:
    """The symbol's own plan, else the request-wide fields; validated (the stake against
    ``market`` when known), with its warmup."""
    plan = up.plans.get(symbol) or SymbolPlan(
        strategies=up.strategies, stake=up.stake, order_type=up.order_type)
    if not plan.strategies:
        plan = msgspec.structs.replace(plan, strategies=list(DEFAULT_PLAN.strategies))
    try:
        warmup = check_plan(symbol, plan, market)
    except SettingsError as exc:
        raise ProtocolError(ErrorCode.BAD_CONFIG, str(exc)) from None
    config = WorkerConfig(symbol=symbol, strategies=plan.strategies, stake=plan.stake,
                          order_type=plan.order_type)
    return config, warmup


def _plan_text(config: WorkerConfig, option: str) -> str:
    """One plan field of ``config`` as its CLI options (``option``: a SymbolPlan field)."""
    if option == "strategies":
        return " ".join(
            f"-s {spec.name}" + (":" + ",".join(f"{k}={v}" for k, v in spec.params.items())
                                 if spec.params else "")
            for spec in config.strategies)
    if option == "stake":
        return f"--stake {Decimal(config.stake).normalize():f}"
    return f"--{option.replace('_', '-')} {getattr(config, option)}"
