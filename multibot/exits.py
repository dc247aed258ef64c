"""How every command fails: a MultibotError ends as ``error: <message>`` on stderr and the
error's exit code (2: bad input, nothing was done; 1: the outcome failed).

Command modules wrap each typer command with ``reported`` where they register it, so a
command fails the same way in `multibot` and in any app it is added to.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from multibot.errors import MultibotError, ProtocolError

_P = ParamSpec("_P")
_R = TypeVar("_R")


def message_and_exit_code(exc: MultibotError) -> tuple[str, int]:
    """What the user reads and what the command exits with."""
    if isinstance(exc, ProtocolError):  # the fleet's error reply, or none in time
        return f"{exc.reason} [{exc.code.value}]", exc.exit_code
    return str(exc), exc.exit_code


def reported(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """``command`` with every MultibotError it raises reported and turned into its exit."""

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except MultibotError as exc:
            message, code = message_and_exit_code(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(code) from None

    return run
