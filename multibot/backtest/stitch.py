"""Join the parts of one symbol's run (see ``split``) into the run it would have been in one
piece, exactly: the same fills, decisions, position snapshots and counts.

A part after the first started flat with a realized PnL of 0 and order ids from 1. So its
realized PnL (each fill's, each snapshot's) is shifted by what the parts before it realized,
in exact Decimal arithmetic as the position keeps it, and its order ids by the orders the
parts before it placed. Its fills' positions and average entries need nothing: they started
flat in the whole run as well.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from decimal import Decimal, localcontext

from multibot.backtest.engine import MAX_WARNINGS, Decision, FillRecord, SymbolRun
from multibot.market.position import EXACT
from multibot.market.rules import fmt
from multibot.wire.protocol import client_order_id
from orchestrator.broker.paper import parse_seq

__all__ = ["stitch"]


def stitch(parts: Sequence[SymbolRun]) -> SymbolRun | None:
    """The whole run from its parts (in any order), or None when it cannot be trusted: the
    parts do not cover the bars one after the other (each part finds the cuts in its own
    strategies' signals: ones that differ from run to run cut differently), a part did not
    end at rest where the next one began, or a later part holds text that would name its own
    order ids (a rejection, an error). Run the symbol in one piece then."""
    runs = sorted((p for p in parts if p.bars), key=lambda p: p.first_bar)
    if not runs:
        return dataclasses.replace(parts[0], parts=len(parts))
    if runs[0].first_bar or any(a.first_bar + a.bars != b.first_bar
                                for a, b in itertools.pairwise(runs)):
        return None
    if not all(r.settled for r in runs[:-1]) or any(r.strategy_errors for r in runs):
        return None
    if any(r.rejected_orders or r.last_error for r in runs[1:]):
        return None
    whole = dataclasses.replace(runs[0], fills=list(runs[0].fills),
                                decisions=list(runs[0].decisions),
                                change_bar=list(runs[0].change_bar), qty=list(runs[0].qty),
                                avg_entry=list(runs[0].avg_entry),
                                realized=list(runs[0].realized),
                                warnings=list(runs[0].warnings), parts=len(parts))
    realized = _realized_at_end(runs[0])
    placed = _placed(runs[0])
    for run in runs[1:]:
        _append(whole, run, realized, placed)
        if run.fills:
            realized = _shift(run.fills[-1].realized_pnl, realized)
        placed += _placed(run)
    whole.bars = sum(r.bars for r in runs)
    whole.settled = runs[-1].settled
    whole.seconds = max(r.seconds for r in runs)
    whole.warnings = whole.warnings[:MAX_WARNINGS]
    return whole


def _realized_at_end(run: SymbolRun) -> Decimal:
    return Decimal(run.fills[-1].realized_pnl) if run.fills else Decimal(0)


def _placed(run: SymbolRun) -> int:
    return sum(1 for d in run.decisions if d.action == "PLACE")


def _shift(text: str, by: Decimal) -> Decimal:
    with localcontext(EXACT):
        return Decimal(text) + by


def _append(whole: SymbolRun, run: SymbolRun, realized: Decimal, placed: int) -> None:
    """``run``, a later part, shifted by the ``realized`` PnL and ``placed`` order ids of the
    parts before it, at the end of ``whole``."""
    symbol, fills = whole.symbol, run.fills
    with localcontext(EXACT):
        shifted = [Decimal(f.realized_pnl) + realized for f in fills]
    whole.fills += [FillRecord(f.bar, f.side, f.price, f.qty, f.fee, f.position, fmt(value))
                    for f, value in zip(fills, shifted, strict=True)] if realized else fills
    whole.decisions += [_renumbered(d, symbol, placed) for d in run.decisions]
    # a snapshot's realized PnL is that of the part's last fill on or before its bar
    at = 0
    for bar, qty, avg in zip(run.change_bar, run.qty, run.avg_entry, strict=True):
        while at < len(fills) and fills[at].bar <= bar:
            at += 1
        whole.change_bar.append(bar)
        whole.qty.append(qty)
        whole.avg_entry.append(avg)
        whole.realized.append(float(shifted[at - 1] if at else realized))
    whole.warnings += run.warnings


def _renumbered(decision: Decision, symbol: str, placed: int) -> Decision:
    seq = parse_seq(symbol, decision.client_order_id)
    if not placed or not seq:
        return decision
    return Decision(decision.bar_time, decision.action, client_order_id(symbol, seq + placed),
                    decision.side, decision.type, decision.quantity, decision.price)
