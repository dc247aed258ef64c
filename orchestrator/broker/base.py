"""The one interface every broker gives the orchestrator: paper fills or a real exchange.

The fleet, the worker link, status and control see a ``Broker`` and nothing else: they never
ask which kind it is. Orders are async because an exchange answers over the network; the
paper broker answers at once.
"""

from __future__ import annotations

from collections.abc import Coroutine
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from multibot.errors import ErrorCode, MultibotError
from multibot.market.bar import Bar
from multibot.wire.protocol import OrderUpdate, OrderView, PlaceOrder, PositionView, SymbolRules
from orchestrator.broker.decisions import Decisions


class NotReconciled(MultibotError):
    """The symbol's journal and the venue disagree in a way we must not trade through."""

    CODE = ErrorCode.NOT_AVAILABLE


class Broker(Protocol):
    """Positions come from journaled fills; every order is journaled before it can fill."""

    @property
    def on_exchange(self) -> bool:
        """Whether orders go to an exchange (testnet/live) rather than paper fills."""
        ...

    def add_rules(self, rules: SymbolRules) -> None:
        """Make (or update) a symbol tradable."""
        ...

    def position(self, symbol: str) -> PositionView: ...

    def open_orders(self, symbol: str) -> list[OrderView]: ...

    def next_seq(self, symbol: str) -> int:
        """The sequence number of the symbol's next client order id."""
        ...

    @property
    def decisions(self) -> Decisions:
        """Each symbol's last decided bar and its duplicate bars over the fleet's life."""
        ...

    def last_price(self, symbol: str) -> Decimal | None: ...

    def unrealized_pnl(self, symbol: str) -> Decimal: ...

    def on_bar(self, bar: Bar) -> list[OrderUpdate]:
        """A closed bar: its close is the last price; paper fills the orders it crosses."""
        ...

    async def place(self, symbol: str, order: PlaceOrder) -> OrderUpdate:
        """Place (or, for a known client order id, look up) an order; idempotent."""
        ...

    async def cancel(self, symbol: str, client_order_id: str) -> OrderUpdate: ...

    async def cancel_all(self, symbol: str) -> list[OrderUpdate]: ...

    async def reconcile(self, symbol: str) -> None:
        """Make the journal agree with the venue before ``symbol`` trades (paper: nothing);
        ``NotReconciled`` when they cannot be made to agree."""
        ...


_T = TypeVar("_T")


def at_once(call: Coroutine[Any, Any, _T]) -> _T:
    """The result of a broker call that needs no waiting (every call of a broker that is not
    ``on_exchange``): taken now, so that a paper order is placed before the next bar is seen,
    exactly where the fleet reads it."""
    try:
        call.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    call.close()
    raise RuntimeError("a broker call that must answer at once waited")
