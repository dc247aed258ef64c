"""`kill`: stop some symbols' workers (they cancel their orders; ``flatten`` also closes the
position) and stop serving their market data. A killed symbol is not restarted."""

from __future__ import annotations

import asyncio

import msgspec

from multibot.wire.protocol import ErrorCode, Kill, KillResult, ProtocolError
from orchestrator.control.base import Command, checked_symbols, symbol_result
from orchestrator.flatten import sell_leftover
from orchestrator.supervisor import State


class KillCommand(Command[Kill, Kill]):
    request = Kill

    def validate(self, request: Kill) -> Kill:
        """The request with its symbols normalised, each of them running."""
        symbols = checked_symbols(request.symbols)
        handles = self.ports.supervisor.handles
        not_running = [s for s in symbols if s not in handles or handles[s].state == State.STOPPED]
        if not_running:
            running = sorted(s for s, h in handles.items() if h.state != State.STOPPED)
            raise ProtocolError(
                ErrorCode.NOT_RUNNING,
                f"not running: {', '.join(not_running)}; running: {', '.join(running) or 'none'}",
            )
        return msgspec.structs.replace(request, symbols=symbols)

    async def execute(self, checked: Kill) -> KillResult:
        stopped = await asyncio.gather(
            *(self.ports.supervisor.stop(symbol, checked.flatten) for symbol in checked.symbols)
        )
        problems = {}
        for symbol in checked.symbols:
            if checked.flatten:  # what its worker could not flatten (none to ask, or no time)
                problems[symbol] = await sell_leftover(self.ports.trading, symbol)
            self.ports.trading.feed.remove(symbol)
        return KillResult(results=[symbol_result(h, problems.get(h.symbol, ""))
                                   for h in stopped])
