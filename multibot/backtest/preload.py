"""Imported once by the forkserver that backtest children are forked from (see pool): the
engine and the strategies, so that they cost nothing per child and their memory stays shared;
``gc.freeze`` keeps the collector from touching (and so copying) them in the children."""

import gc

import multibot.backtest.pool  # noqa: F401

gc.freeze()
