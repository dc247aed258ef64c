"""Every command's --help, through the real entry point, shows its help text whole: a word in
square brackets ([fleet], [env MULTIBOT_HOME; ...]) is text for people, not markup to eat."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import typer.main

from multibot.cli.app import app


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under ``group`` (typer's own click), with the words that reach it."""
    found = [(path, group)]
    if hasattr(group, "commands"):
        for name, sub in group.commands.items():
            found += commands(sub, (*path, name))
    return found


def flat(text: str) -> str:
    """The help as one line: box edges gone, wrapped lines joined."""
    return " ".join(text.replace("│", " ").split())


def test_no_bracketed_word_is_lost_from_any_help() -> None:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    checked = 0
    for path, command in commands(typer.main.get_command(app)):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        bracketed = {flat(w) for t in texts for w in re.findall(r"\[[^\]]+\]", t)}
        if not bracketed:
            continue
        shown = subprocess.run([sys.executable, "-m", "multibot.cli.app", *path, "--help"],
                               capture_output=True, text=True, timeout=30, env=env, check=True)
        for word in bracketed:
            assert word in flat(shown.stdout), f"`{' '.join(path)} --help` lost {word}"
        checked += 1
    assert checked >= 2  # at least up's --config and --home
