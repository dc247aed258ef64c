"""Credentials never leak: not to workers, argv, logs, status, events or the journal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import psutil
import pytest
from Crypto.PublicKey import ECC, RSA

from orchestrator.supervisor import worker_environment
from tests.fakes.binance import FakeBinance
from tests.support import FleetCli, eventually, record_figures, where, worker_running

pytestmark = pytest.mark.process

SECRET = "s3cr3t-Zq8vV1rT0pP4"


def test_worker_environment_drops_anything_credential_like() -> None:
    env = worker_environment({"PATH": "/bin", "MULTIBOT_API_KEY": "k", "BINANCE_SECRET": "s",
                              "DB_PASSWORD": "p", "GITHUB_TOKEN": "t", "HOME": "/root"})
    assert set(env) >= {"PATH", "HOME"}
    assert not {"MULTIBOT_API_KEY", "BINANCE_SECRET", "DB_PASSWORD", "GITHUB_TOKEN"} & set(env)
    assert env["OMP_NUM_THREADS"] == "1"


def test_a_secret_in_the_environment_appears_nowhere(fleet: FleetCli) -> None:
    env = dict(os.environ, MULTIBOT_API_KEY=SECRET + "-key", MULTIBOT_API_SECRET=SECRET)
    fleet.run("up", "BTCUSDT", "ETHUSDT", "--speed", "50", "-s", "sma_cross:fast=2,slow=5",
              env=env, check=True)
    eventually(lambda: all(w["trades"] > 2 for w in fleet.workers().values()), timeout=30,
               what="some trading")
    for worker in fleet.workers().values():
        environ = psutil.Process(worker["pid"]).environ()
        assert SECRET not in "".join(environ.values())  # workers never hold credentials
    outputs = [fleet.run("status", check=True).stdout,
               fleet.run("status", "--json", check=True).stdout,
               fleet.run("logs", "BTCUSDT", "-n", "1000", check=True).stdout]
    outputs += [" ".join(p.cmdline()) for p in fleet.processes()]  # argv / process titles
    fleet.run("kill", "ETHUSDT", "--flatten", check=True)
    fleet.run("down", check=True)
    outputs += [p.read_text(errors="replace") for p in (fleet.home / "logs").glob("*.log")]
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        outputs += ["\n".join(journal.iterdump())]
    for text in outputs:
        assert SECRET not in text
    record_figures({"secret_redaction_places_checked": len(outputs) + 2, "secret_leaks": 0})


PASSPHRASE = "pp-Kq7vX2mN9wR4-unlock"


def _pem_lines(pem: str) -> list[str]:
    """The lines of a PEM's body (each a piece of the key)."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


@pytest.mark.parametrize("how", ["rsa-encrypted-in-env", "ed25519-file-in-key-file"])
def test_a_private_key_and_its_passphrase_appear_nowhere(fleet: FleetCli, tmp_path: Path,
                                                         how: str) -> None:
    """A fleet trading on testnet (the local fake) with an Ed25519 or RSA key: the key (as given
    and decrypted) and its passphrase are in no worker, argv, log, status or journal."""
    env = dict(os.environ)
    if how.startswith("rsa"):
        rsa = RSA.generate(2048)
        public = rsa.public_key().export_key().decode()
        given = rsa.export_key(passphrase=PASSPHRASE, pkcs=8,
                               protection="scryptAndAES128-CBC").decode()
        unlocked = rsa.export_key().decode()
        env.update(MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY=given,
                   MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY_PASS=PASSPHRASE)
    else:
        ed25519 = ECC.generate(curve="Ed25519")
        public = ed25519.public_key().export_key(format="PEM")
        given = ed25519.export_key(format="PEM", passphrase=PASSPHRASE,
                                   protection="PBKDF2WithHMAC-SHA1AndAES128-CBC")
        unlocked = ed25519.export_key(format="PEM")
        pem_file, key_file = tmp_path / "binance-ed25519.pem", tmp_path / "testnet.toml"
        pem_file.write_text(given)
        key_file.write_text(f'network = "testnet"\napi_key = "{how}-key"\n'
                            f'private_key = "{pem_file.name}"\n'
                            f'private_key_pass = "{PASSPHRASE}"\n')
        for path in (pem_file, key_file):
            os.chmod(path, 0o600)
        env.update(MULTIBOT_BINANCE_TESTNET_KEY_FILE=str(key_file))
    secrets = [PASSPHRASE, *_pem_lines(given), *_pem_lines(unlocked)]
    with FakeBinance(api_key="hmac-key", api_secret=SECRET, symbols=["BTCUSDT", "ETHUSDT"],
                     balances={"USDT": "100000"}, tick_s=0.05, volatility=0.002) as exchange:
        exchange.add_api_key(f"{how}-key", public)
        env.update(MULTIBOT_BINANCE_REST_URL=exchange.rest_url,
                   MULTIBOT_BINANCE_STREAM_URL=exchange.stream_url,
                   MULTIBOT_BINANCE_TESTNET_API_KEY=f"{how}-key")
        fleet.run("up", "BTCUSDT", "ETHUSDT", "--mode", "testnet", "-s",
                  "sma_cross:fast=2,slow=4", "--interval", "1s", env=env, check=True, timeout=90)
        eventually(lambda: all(w["trades"] >= 2 for w in fleet.workers().values()), timeout=60,
                   what="trading signed with the private key")
        assert exchange.count("POST", "/api/v3/order", 200) >= 4
        assert exchange.count("POST", "/api/v3/order", 400) == 0  # no signature refused
        outputs = [_environ_text(w["pid"]) for w in fleet.workers().values()]
        forkserver = _forkserver(fleet)
        assert forkserver is not None
        outputs += [_environ_text(forkserver.pid),
                    fleet.run("status", check=True).stdout,
                    fleet.run("status", "--json", check=True).stdout,
                    fleet.run("logs", "BTCUSDT", "-n", "1000", check=True).stdout]
        outputs += [" ".join(p.cmdline()) for p in fleet.processes()]
        fleet.run("kill", "ETHUSDT", "--flatten", check=True)
        fleet.run("down", check=True)
    outputs += [p.read_text(errors="replace") for p in (fleet.home / "logs").glob("*.log")]
    with sqlite3.connect(fleet.home / "multibot.db") as journal:
        outputs += ["\n".join(journal.iterdump())]
    assert len(outputs) >= 12
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    record_figures({f"private_key_places_checked_{how.split('-')[0]}": len(outputs),
                    "private_key_leaks": 0})


def _environ_text(pid: int) -> str:
    environ = _environ(pid)
    assert "PATH" in environ  # readable: the check means something
    return "\n".join(f"{k}={v}" for k, v in environ.items())


def _forkserver(fleet: FleetCli) -> psutil.Process | None:
    """The orchestrator's live worker forkserver (found by its title), if any."""
    pid = fleet.orchestrator_pid()
    assert pid is not None, "the fleet runs"
    orchestrator = psutil.Process(pid)
    for child in orchestrator.children():
        with contextlib.suppress(psutil.Error):
            if "multibot-forkserver" in " ".join(child.cmdline()) and child.status() not in (
                    psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return child
    return None


def _environ(pid: int) -> dict[str, str]:
    """/proc/<pid>/environ, which the process title leaves intact (SPT_NOENV)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _assert_scrubbed(pid: int) -> None:
    environ = _environ(pid)
    assert "PATH" in environ  # the environment is readable: the check below means something
    assert "MULTIBOT_BINANCE_API_KEY" not in environ
    assert SECRET not in "".join(environ.values())


def _up_with_a_credential(fleet: FleetCli, *symbols: str) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, MULTIBOT_BINANCE_API_KEY=SECRET)
    fleet.run("up", *symbols, "--speed", "50", env=env, check=True)
    return eventually(lambda: where(fleet.workers(), lambda ws: all(
        w["state"] == "RUNNING" for w in ws.values())), timeout=30, what="workers RUNNING")


def test_a_dead_forkserver_is_replaced_with_the_scrubbed_environment(fleet: FleetCli) -> None:
    before = _up_with_a_credential(fleet, "BTCUSDT", "ETHUSDT")
    forkserver = eventually(lambda: _forkserver(fleet), what="the worker forkserver")
    _assert_scrubbed(forkserver.pid)
    forkserver.send_signal(signal.SIGKILL)
    eventually(lambda: _forkserver(fleet) is None, what="the forkserver gone")
    psutil.Process(before["BTCUSDT"]["pid"]).send_signal(signal.SIGKILL)
    restarted = eventually(lambda: worker_running(fleet, "BTCUSDT", before["BTCUSDT"]["pid"]),
                           timeout=30, what="BTCUSDT restarted")
    _assert_scrubbed(restarted["pid"])  # forked from a new forkserver, started clean too
    _assert_scrubbed(eventually(lambda: _forkserver(fleet), what="a new forkserver").pid)
    # its exit is known (the orchestrator adopted it), not "exited with code 255"
    assert "SIGKILL" in restarted["last_error"]
    # the forkserver's death stopped no worker: ETHUSDT runs on, never restarted
    eth = before["ETHUSDT"]
    trades = eth["trades"]
    eventually(lambda: where(fleet.workers()["ETHUSDT"], lambda w: w["pid"] == eth["pid"]
                             and w["state"] == "RUNNING" and w["trades"] > trades),
               timeout=30, what="ETHUSDT trading on in the same process")
    assert fleet.workers()["ETHUSDT"]["restarts"] == 0


def test_garbage_on_the_forkserver_listener_stops_no_worker(fleet: FleetCli) -> None:
    before = _up_with_a_credential(fleet, "BTCUSDT")
    forkserver = eventually(lambda: _forkserver(fleet), what="the worker forkserver")
    listeners = [c.laddr for c in forkserver.net_connections(kind="unix")
                 if "listener-" in c.laddr]  # multiprocessing's name for it
    assert listeners, "the forkserver listens on a unix socket"
    for payload in (b"", b"garbage\0" * 100):
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(listeners[0])
            sock.sendall(payload)
    eventually(lambda: _forkserver(fleet) is None, what="multiprocessing's server exiting on it")
    btc = before["BTCUSDT"]
    trades = btc["trades"]
    eventually(lambda: where(fleet.workers()["BTCUSDT"], lambda w: w["pid"] == btc["pid"]
                             and w["state"] == "RUNNING" and w["trades"] > trades + 2),
               timeout=30, what="BTCUSDT trading on in the same process")
    fleet.run("kill", "BTCUSDT", check=True)
    fleet.run("up", "BTCUSDT", check=True)  # a forkserver (the same or a new one) still forks
    restarted = eventually(lambda: worker_running(fleet, "BTCUSDT", btc["pid"]), timeout=30,
                           what="BTCUSDT started again")
    _assert_scrubbed(restarted["pid"])
