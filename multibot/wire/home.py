"""Where one fleet keeps its state: the home directory, its sockets, logs, journal and lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from multibot.errors import ErrorCode, MultibotError

# ipc:// paths are limited to ~107 bytes (sun_path); keep a margin for the longest name.
_MAX_SOCKET_PATH = 100
_SOCKET_NAMES = ("control", "events", "market", "broker")


class HomeError(MultibotError):
    """The home directory is unusable or already owned by another orchestrator."""

    CODE = ErrorCode.NOT_AVAILABLE


def default_home() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "multibot"


def resolve_home(home: str | Path | None) -> Path:
    """``--home`` beats ``MULTIBOT_HOME`` beats the per-user default."""
    chosen = home or os.environ.get("MULTIBOT_HOME") or default_home()
    return Path(chosen).expanduser().resolve()


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def at(cls, home: str | Path | None) -> Home:
        return cls(resolve_home(home))

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def journal_path(self) -> Path:
        return self.root / "multibot.db"

    @property
    def lock_path(self) -> Path:
        return self.run_dir / "orchestrator.lock"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / "orchestrator.pid"

    @property
    def orchestrator_log(self) -> Path:
        return self.logs_dir / "orchestrator.log"

    def worker_log(self, symbol: str) -> Path:
        return self.logs_dir / f"{symbol}.log"

    @property
    def socket_dir(self) -> Path:
        """``<home>/run`` when short enough for ipc://, else a private dir under /tmp."""
        if len(str(self.run_dir / "control.sock")) <= _MAX_SOCKET_PATH:
            return self.run_dir
        import hashlib  # rarely needed: not on every CLI command's start-up

        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path("/tmp") / f"multibot-{os.getuid()}" / digest

    def endpoint(self, name: str) -> str:
        assert name in _SOCKET_NAMES, name
        return f"ipc://{self.socket_dir / (name + '.sock')}"

    def socket_path(self, name: str) -> Path:
        return self.socket_dir / f"{name}.sock"

    def ensure(self) -> None:
        """Create the home with private permissions (0700)."""
        for path in (self.root, self.run_dir, self.logs_dir):
            _private_dir(path)
        if self.socket_dir != self.run_dir:
            _private_dir(self.socket_dir.parent)
            _private_dir(self.socket_dir)
            (self.run_dir / "socket_dir").write_text(str(self.socket_dir) + "\n")

    def remove_stale_sockets(self) -> None:
        """Called only while holding the lock: any socket file left is from a dead process."""
        for name in _SOCKET_NAMES:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path(name).unlink()

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


class HomeLock:
    """One orchestrator per home: an flock held for the orchestrator's lifetime.

    The kernel drops the lock when the holder dies, so a crash never leaves a stale lock.
    """

    def __init__(self, home: Home) -> None:
        self._home = home
        self._fd: int | None = None

    def acquire(self) -> None:
        self._home.ensure()
        fd = os.open(self._home.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = self._home.read_pid()
            raise HomeError(
                f"another orchestrator (pid {owner}) already runs on home {self._home.root}"
            ) from None
        self._fd = fd
        self._home.pid_path.write_text(f"{os.getpid()}\n")
        self._home.remove_stale_sockets()

    def release(self) -> None:
        if self._fd is None:
            return
        self._home.remove_stale_sockets()
        with contextlib.suppress(FileNotFoundError):
            self._home.pid_path.unlink()
        os.close(self._fd)
        self._fd = None
