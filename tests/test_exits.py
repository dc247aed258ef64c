"""Every command fails one way: its MultibotError's message on stderr and its exit code."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from multibot.client import FleetNotRunning
from multibot.errors import ErrorCode, MultibotError, ProtocolError
from multibot.exits import message_and_exit_code, reported
from multibot.wire.settings import SettingsError


def test_bad_input_exits_2_and_failures_exit_1() -> None:
    assert message_and_exit_code(SettingsError("no such mode")) == ("no such mode", 2)
    assert message_and_exit_code(FleetNotRunning("no fleet")) == ("no fleet", 1)
    assert message_and_exit_code(MultibotError("gone", ErrorCode.TIMEOUT)) == ("gone", 1)


def test_a_fleets_error_reply_shows_its_code_and_refusals_of_input_exit_2() -> None:
    for code in (ErrorCode.UNKNOWN_SYMBOL, ErrorCode.CONFLICT, ErrorCode.NOT_RUNNING,
                 ErrorCode.NOT_AVAILABLE, ErrorCode.BAD_CONFIG):
        assert message_and_exit_code(ProtocolError(code, "no")) == (f"no [{code.value}]", 2)
    for code in (ErrorCode.TIMEOUT, ErrorCode.BAD_VERSION, ErrorCode.MALFORMED,
                 ErrorCode.INTERNAL, ErrorCode.SHUTTING_DOWN):
        assert message_and_exit_code(ProtocolError(code, "no"))[1] == 1


def test_reported_commands_print_the_error_and_exit_with_its_code() -> None:
    app = typer.Typer()

    @app.command()
    @reported
    def fails(symbol: str, strict: bool = False) -> None:
        """A command that refuses its input (typer still sees its parameters)."""
        raise SettingsError(f"{symbol!r} is not a symbol")

    @app.command()
    def other() -> None:
        """A second command, so that typer keeps the command names."""

    result = CliRunner().invoke(app, ["fails", "b@d", "--strict"])
    assert result.exit_code == 2
    assert result.stderr == "error: 'b@d' is not a symbol\n" and result.stdout == ""
