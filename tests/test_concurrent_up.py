"""Two `up`s racing to start a fleet on one home: one fleet runs, with the winner's settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import FleetCli, eventually, where

pytestmark = pytest.mark.process

_PACE = {"replay": "paper, replay 1m @ 50 bars/s", "synthetic": "paper, synthetic 1m @ 50 bars/s"}


def _up(fleet: FleetCli, feed: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "multibot.cli.app", "up", "BTCUSDT", "--feed", feed,
         "--speed", "50", "--home", str(fleet.home)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_loser_of_a_race_to_start_leaves_the_winners_fleet_running(
        fleet: FleetCli) -> None:
    racers = {feed: _up(fleet, feed) for feed in ("replay", "synthetic")}
    try:
        outputs = {feed: racer.communicate(timeout=90) for feed, racer in racers.items()}
    finally:
        for racer in racers.values():
            racer.kill()
    codes = {feed: racer.returncode for feed, racer in racers.items()}
    winners = [feed for feed, code in codes.items() if code == 0]
    assert len(winners) == 1 and sorted(codes.values()) == [0, 2], (codes, outputs)
    winner = winners[0]
    loser = "synthetic" if winner == "replay" else "replay"
    assert f"started orchestrator pid {fleet.orchestrator_pid()}" in outputs[winner][0]
    assert "started orchestrator" not in outputs[loser][0]
    # refused, naming the running fleet's setting; exit 2 (a fleet's refusal of what was asked)
    assert f"the running fleet uses --feed {winner}, not {loser}" in outputs[loser][1]
    log = (fleet.home / "logs" / "orchestrator.log").read_text()
    if "another orchestrator" in log:  # the loser had started a daemon too: the race this is
        assert f"({_PACE[winner]}) was started on {fleet.home} by another command" in (
            outputs[loser][1])
    # the fleet runs on, with the winner's feed, its worker trading
    assert fleet.status()["orchestrator"]["feed"] == winner
    eventually(lambda: where(fleet.workers(), lambda ws: ws["BTCUSDT"]["state"] == "RUNNING"
                             and ws["BTCUSDT"]["trades"] > 0), timeout=30, what="BTCUSDT trading")
