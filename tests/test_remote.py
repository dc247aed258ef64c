"""Who may command the fleet: private files for ipc, CURVE keys for TCP, never plaintext.

Key storage and the `keys` CLI are tested in test_keys.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio

from multibot import remote as client_remote
from multibot.wire import endpoints, keystore, logfiles
from multibot.wire.home import Home
from multibot.wire.protocol import (
    Error,
    ErrorCode,
    Logs,
    LogText,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Status,
    decode,
    encode,
)
from orchestrator import remote as remote_server
from tests.support import FleetCli, eventually

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- local control: file permissions (a real fleet) ------------------------------------


@pytest.fixture(scope="module")
def reachable_fleet() -> Iterator[FleetCli]:
    """A fleet whose home sits in a directory every user may traverse, so only the home's
    own permissions stand between another user and the sockets."""
    parent = Path(tempfile.mkdtemp(prefix="mb-remote-"))
    os.chmod(parent, 0o755)
    cli = FleetCli(parent / "home")
    try:
        cli.up("BTCUSDT")
        yield cli
    finally:
        cli.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.process
def test_home_and_sockets_are_private(fleet: FleetCli) -> None:
    fleet.up("BTCUSDT")
    home = Home.at(fleet.home)
    for directory in (home.root, home.run_dir, home.logs_dir, home.socket_dir):
        assert _mode(directory) == 0o700, directory
    sockets = [p for p in home.socket_dir.iterdir() if stat.S_ISSOCK(p.stat().st_mode)]
    assert {p.name for p in sockets} >= {"control.sock", "broker.sock"}
    for sock in sockets:
        assert _mode(sock) == 0o600, sock


_CHILD = r"""
import json, os, sys
import zmq
from multibot.wire import protocol as p
endpoint, path, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
if uid:  # drop privileges for good, before any zmq thread exists
    os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
    try:
        os.setuid(0); sys.exit("privileges were not dropped")
    except PermissionError:
        pass
def reach(path):
    try:
        os.stat(path); return "ok"
    except OSError as exc:
        return type(exc).__name__
sock = zmq.Context.instance().socket(zmq.DEALER); sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint); sock.send(p.encode(p.Ping()))
reply = p.decode(sock.recv())[1].TYPE if sock.poll(2000) else "none"
sock.close(0)
print(json.dumps({"uid": os.geteuid(), "parent": reach(os.path.dirname(sys.argv[4])),
                  "socket": reach(path), "reply": reply}))
"""


def _ping_as(cli: FleetCli, uid: int) -> dict[str, object]:
    home = Home.at(cli.home)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, home.endpoint("control"), str(home.socket_path("control")),
         str(uid), str(home.root)],
        capture_output=True, text=True, timeout=30, cwd=REPO, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.process
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_command_the_fleet(reachable_fleet: FleetCli) -> None:
    assert _ping_as(reachable_fleet, 0) == {"uid": 0, "parent": "ok", "socket": "ok",
                                            "reply": "pong"}
    assert _ping_as(reachable_fleet, NOBODY) == {
        "uid": NOBODY, "parent": "ok", "socket": "PermissionError", "reply": "none"}


# --- remote control: CURVE over TCP (an in-test server, no fleet) ----------------------


class CurveServer:
    """An asyncio ping server on a CURVE ROUTER from our helpers, in a thread."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.endpoint = ""
        self.auth: remote_server.CurveAuthenticator | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> CurveServer:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "server thread did not stop"

    async def _main(self) -> None:
        ctx = zmq.asyncio.Context()
        serving: asyncio.Task[None] | None = None
        try:
            auth = remote_server.start_authenticator(ctx, self.home)
            assert isinstance(auth, remote_server.CurveAuthenticator)
            self.auth = auth
            sock = remote_server.bind_curve_router(ctx, self.home, "tcp://127.0.0.1:0")
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            serving = asyncio.create_task(self._serve(sock))
            self._ready.set()
            await self._stop.wait()
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            if serving is not None:
                serving.cancel()
            if self.auth is not None:
                self.auth.stop()
            ctx.destroy(linger=0)

    async def _serve(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            identity, *frames = await sock.recv_multipart()
            try:
                envelope, message = decode(frames[-1])
            except ProtocolError:
                continue
            reply = (Pong(pid=os.getpid(), home=str(self.home.root)) if isinstance(message, Ping)
                     else Error(code=ErrorCode.NOT_ALLOWED, reason="test server pings only"))
            await sock.send_multipart([identity, encode(reply, envelope.id)])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CurveServer]:
    srv = CurveServer(Home(tmp_path / "server-home"))
    try:
        yield srv.start()
    finally:
        srv.stop()


def _ask(srv: CurveServer, key: Path, message: Message | None = None, timeout: float = 5.0,
         server_key: bytes | None = None) -> Message:
    public = server_key or keystore.ensure_server_keys(srv.home)[0]
    return client_remote.remote_request(srv.endpoint, public, key, message or Ping(), timeout)


def test_authorized_client_gets_replies(server: CurveServer) -> None:
    key = keystore.generate_client_key(server.home, "laptop")
    for _ in range(2):
        reply = _ask(server, key)
        assert isinstance(reply, Pong) and reply.home == str(server.home.root)
    with pytest.raises(ProtocolError) as caught:
        _ask(server, key, Status())
    assert caught.value.code is ErrorCode.NOT_ALLOWED


def test_unknown_key_or_wrong_server_key_is_refused_at_once(server: CurveServer,
                                                             tmp_path: Path) -> None:
    """A failed CURVE handshake is told apart (and at once), not waited out as silence."""
    stranger = keystore.generate_client_key(server.home, "stranger", authorize=False)
    started = time.monotonic()
    with pytest.raises(ProtocolError) as caught:
        _ask(server, stranger, timeout=10.0)
    assert caught.value.code is ErrorCode.NOT_ALLOWED and "not authorized" in caught.value.reason
    friend = keystore.generate_client_key(server.home, "friend")
    impostor = keystore.ensure_server_keys(Home(tmp_path / "impostor"))[0]
    with pytest.raises(ProtocolError, match="server key is wrong") as caught:
        _ask(server, friend, timeout=10.0, server_key=impostor)
    assert caught.value.code is ErrorCode.NOT_ALLOWED
    assert time.monotonic() - started < 3.0  # both, far within one 10 s timeout


def test_nobody_listening_is_a_timeout_that_says_so(tmp_path: Path) -> None:
    import socket as pysocket

    with pysocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    home = Home(tmp_path / "home")
    key = keystore.generate_client_key(home, "laptop")
    public = keystore.ensure_server_keys(home)[0]
    with pytest.raises(ProtocolError, match="no connection") as caught:
        client_remote.remote_request(endpoint, public, key, Ping(), 0.5)
    assert caught.value.code is ErrorCode.TIMEOUT


@pytest.mark.parametrize("mechanism", ["null", "plain"])
def test_plaintext_client_gets_no_reply(server: CurveServer, mechanism: str) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        if mechanism == "plain":
            sock.plain_username, sock.plain_password = b"admin", b"admin"
        sock.setsockopt(zmq.SNDTIMEO, 1000)  # no handshake may mean no pipe to queue on
        sock.connect(server.endpoint)
        with contextlib.suppress(zmq.Again):
            sock.send(encode(Ping()))
        assert sock.poll(1000) == 0
    finally:
        sock.close(0)


def test_revocation_applies_to_the_next_connection(server: CurveServer) -> None:
    key = keystore.generate_client_key(server.home, "phone")
    assert isinstance(_ask(server, key), Pong)
    keystore.revoke(server.home, "phone")
    with pytest.raises(ProtocolError, match="not authorized"):
        _ask(server, key, timeout=1.0)
    keystore.authorize(server.home, key.with_suffix(".key"), "phone2")
    assert isinstance(_ask(server, key), Pong)


def test_zap_errors_deny_and_are_logged_not_raised(server: CurveServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    key = keystore.generate_client_key(server.home, "laptop")
    (keystore.authorized_dir(server.home) / "junk.key").write_text("not a key\n")
    assert isinstance(_ask(server, key), Pong)  # a bad file is skipped, the rest works
    assert server.auth is not None
    keys, real = server.auth.keys, server.auth.keys.name_of

    def broken(key: bytes) -> str | None:
        raise OSError("disk on fire")

    keys.name_of = broken  # type: ignore[method-assign]
    try:
        with (caplog.at_level(logging.ERROR, "orchestrator.remote"),
              pytest.raises(ProtocolError, match="not authorized")):
            _ask(server, key, timeout=1.0)
        assert "ZAP request failed" in caplog.text
    finally:
        keys.name_of = real  # type: ignore[method-assign]
    assert isinstance(_ask(server, key), Pong)  # the authenticator survived


def test_no_curve_router_without_authenticator(tmp_path: Path) -> None:
    async def attempt() -> None:
        ctx = zmq.asyncio.Context()
        try:
            with pytest.raises(RuntimeError, match="start_authenticator"):
                remote_server.bind_curve_router(ctx, Home(tmp_path / "h"), "127.0.0.1:0")
            with pytest.raises(endpoints.EndpointError):
                remote_server.bind_curve_router(ctx, Home(tmp_path / "h"), "ipc:///tmp/x.sock")
        finally:
            ctx.destroy(linger=0)

    asyncio.run(attempt())


@pytest.mark.parametrize(("text", "expected"), [
    ("tcp://127.0.0.1:7070", "tcp://127.0.0.1:7070"), ("10.0.0.5:7070", "tcp://10.0.0.5:7070"),
    (" TCP://fleet.example.org:0443 ", "tcp://fleet.example.org:443"),
    ("tcp://[::1]:7070", "tcp://[::1]:7070"),
])
def test_parse_tcp_endpoint_accepts(text: str, expected: str) -> None:
    assert endpoints.parse_tcp_endpoint(text) == expected
    assert endpoints.parse_tcp_endpoint("*:0", for_bind=True) == "tcp://*:*"


@pytest.mark.parametrize("text", [
    "ipc:///tmp/control.sock", "udp://127.0.0.1:7070", "inproc://x", "ws://h:1", "pgm://h:1",
    "tcp://127.0.0.1", "127.0.0.1:0", "h:65536", "h:-1", "h:x", "*:7070", "", "garbage",
    "tcp://a b:1", "tcp://h;evil:1", "tcp://user@h:1", "tcp://h:1/x",
])
def test_parse_tcp_endpoint_refuses(text: str) -> None:
    with pytest.raises(endpoints.EndpointError):
        endpoints.parse_tcp_endpoint(text)


def test_a_real_fleet_is_commanded_over_curve_tcp_only_with_an_authorized_key(
        fleet: FleetCli) -> None:
    import socket as pysocket

    with pysocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    fleet.up("BTCUSDT", "--control-tcp", endpoint)
    fleet.run("keys", "generate", "laptop", check=True)
    fleet.run("keys", "generate", "stranger", "--no-authorize", check=True)
    server_key = fleet.run("keys", "server", check=True).stdout.strip()

    def remote(key: str, *args: str, server: str = server_key
               ) -> subprocess.CompletedProcess[str]:
        return fleet.run("--connect", endpoint, "--key", key, "--server-key", server, *args)

    ok = remote("laptop", "status", "--json")  # the printed (hex) form, as a user pastes it
    assert ok.returncode == 0 and '"BTCUSDT"' in ok.stdout
    z85_key = keystore.ensure_server_keys(Home(fleet.home))[0].decode()
    assert remote("laptop", "status", server=z85_key).returncode == 0  # z85 still works
    started = time.monotonic()
    impostor = keystore.shell_safe_key(keystore.ensure_server_keys(Home(fleet.home / "x"))[0])
    wrong = remote("laptop", "status", server=impostor)
    assert wrong.returncode == 1 and "server key is wrong" in wrong.stderr
    assert time.monotonic() - started < 5.0  # said at once, not after the 10 s timeout
    added = remote("laptop", "up", "ETHUSDT")
    assert added.returncode == 0 and "ETHUSDT" in added.stdout and "RUNNING" in added.stdout
    refused = remote("stranger", "status")
    assert refused.returncode == 1 and "not authorized" in refused.stderr
    assert set(fleet.workers()) == {"BTCUSDT", "ETHUSDT"}


def test_remote_logs_are_the_remote_fleets_over_the_control_socket(
        fleet: FleetCli, tmp_path: Path) -> None:
    """`--connect ... logs` prints the remote fleet's log (asked over CURVE), not a local one;
    only the fleet's own logs can be named, and each reply is bounded."""
    import socket as pysocket

    with pysocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    fleet.up("BTCUSDT", "--control-tcp", endpoint)
    fleet.run("keys", "generate", "laptop", check=True)
    server_key = fleet.run("keys", "server", check=True).stdout.strip()
    key_file = Home(fleet.home).root / "keys" / "clients" / "laptop.key_secret"
    laptop = FleetCli(tmp_path / "laptop-home")  # no fleet, no logs here

    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return laptop.run("--connect", endpoint, "--key", str(key_file),
                          "--server-key", server_key, *args)

    shown = remote("logs", "btcusdt", "-n", "20")
    assert shown.returncode == 0, shown.stderr
    assert "BTCUSDT" in shown.stdout and "warmed up" in shown.stdout
    assert remote("logs", "orchestrator", "-n", "5").stdout.strip()
    for name in ("../multibot", "/etc/passwd", "DOGEUSDT"):
        missing = remote("logs", name)
        assert missing.returncode == 2 and "available: BTCUSDT, orchestrator" in missing.stderr
    assert len(remote("logs", "X" * 5000).stderr) < 500  # a name is not echoed in full
    assert remote("logs", "BTCUSDT", "-n", "1000000").returncode == 2

    # following: what is appended after an offset, and only that
    public = keystore.ensure_server_keys(Home(fleet.home))[0]
    log = Home(fleet.home).worker_log("BTCUSDT")
    follower = subprocess.Popen(
        [sys.executable, "-m", "multibot.cli.app", "--connect", endpoint, "--key", str(key_file),
         "--server-key", server_key, "logs", "BTCUSDT", "-f", "-n", "0",
         "--home", str(laptop.home)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        seen = bytearray()

        def followed() -> bool:
            with open(log, "a") as f:  # appended until the follower has started and sees it
                f.write("followed line\n")
            seen.extend(follower.stdout.read() or b"")  # type: ignore[union-attr]
            return b"followed line\n" in seen

        eventually(followed, timeout=20, interval=0.3,
                   what="`logs -f` over --connect to print a new line")
    finally:
        follower.kill()
        follower.wait(10)

    def ask(offset: int) -> LogText:
        reply = client_remote.remote_request(endpoint, public, key_file,
                                             Logs(name="BTCUSDT", offset=offset))
        assert isinstance(reply, LogText)
        return reply

    end = ask(-1).offset
    assert ask(end).text == ""
    with open(log, "a") as f:
        f.write("appended by the test\n")
    assert ask(end).text == "appended by the test\n"
    with open(log, "a") as f:
        f.write("x" * (logfiles.MAX_LOG_BYTES + 10) + "\n")
    big = ask(end)
    assert len(big.text) == logfiles.MAX_LOG_BYTES and big.offset == end + logfiles.MAX_LOG_BYTES
