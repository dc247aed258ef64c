"""Where one fleet keeps its state: the home directory, its sockets, logs, journal and lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from multibot.errors import ErrorCode, MultibotError

# ipc:// paths are limited to ~107 bytes (sun_path); keep a margin for the longest name.
_MAX_SOCKET_PATH = 100
_SOCKET_NAMES = ("control", "events", "market", "broker")
_SOCKET_BASE = Path("/tmp")  # short on every system; each user gets a 0700 dir in it


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


def _unsafe(path: Path, what: str) -> HomeError:
    return HomeError(f"refusing {path}: {what}; another local user may have planted it: "
                     "remove it after a look, or choose another directory")


def _check_entry(path: Path, st: os.stat_result) -> None:
    """A private directory is a real directory (never a symlink) owned by this user."""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        raise _unsafe(path, f"it is a symbolic link{target}, not a directory of its own")
    if not stat.S_ISDIR(st.st_mode):
        raise _unsafe(path, "it is not a directory")
    if st.st_uid != os.geteuid():
        raise _unsafe(path, f"it is owned by uid {st.st_uid}, not by this user "
                            f"(uid {os.geteuid()})")


def check_private_dir(path: Path) -> None:
    """Raise HomeError if ``path`` exists and is not a directory of this user's (no symlink).

    Changes nothing: for commands that only use a home another one made.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    _check_entry(path, st)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter (0700), created if missing.

    Nothing found there is trusted unless it is a real directory owned by this user: a
    symlink or another user's directory raises HomeError. The check and the chmod go
    through one descriptor opened without following symlinks, so the directory cannot be
    swapped in between.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    check_private_dir(path)  # the clear message for what is found there
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # swapped for a symlink or a file since the check
        raise _unsafe(path, f"it cannot be opened as a directory ({exc.strerror})") from None
    try:
        _check_entry(path, os.fstat(fd))
        os.fchmod(fd, 0o700)
        if os.fstat(fd).st_mode & 0o077:
            raise _unsafe(path, "its permissions cannot be made private (0700)")
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def at(cls, home: str | Path | None) -> Home:
        """The home chosen (see resolve_home); HomeError if a directory of it already there
        is a symlink or not this user's (see ``check``)."""
        found = cls(resolve_home(home))
        found.check()
        return found

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
        return _SOCKET_BASE / f"multibot-{os.getuid()}" / digest

    def endpoint(self, name: str) -> str:
        assert name in _SOCKET_NAMES, name
        return f"ipc://{self.socket_dir / (name + '.sock')}"

    def socket_path(self, name: str) -> Path:
        return self.socket_dir / f"{name}.sock"

    def _private_dirs(self) -> tuple[Path, ...]:
        """Every directory of this home that must be this user's alone, parents first."""
        dirs = (self.root, self.run_dir, self.logs_dir)
        sockets = self.socket_dir
        return dirs if sockets == self.run_dir else (*dirs, sockets.parent, sockets)

    def check(self) -> None:
        """HomeError if a directory of this home exists but is a symlink or another user's:
        this process would otherwise talk to sockets (or read pids) someone else put there."""
        for path in self._private_dirs():
            check_private_dir(path)

    def ensure(self) -> None:
        """Create the home with private permissions (0700); HomeError if a directory of it
        is a symlink or another user's."""
        for path in self._private_dirs():
            private_dir(path)
        if self.socket_dir != self.run_dir:
            write_private(self.run_dir / "socket_dir", str(self.socket_dir) + "\n")

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


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only whatever the umask (also when
    the file was left by a crash with another mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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
        write_private(self._home.pid_path, f"{os.getpid()}\n")
        self._home.remove_stale_sockets()

    def release(self) -> None:
        if self._fd is None:
            return
        self._home.remove_stale_sockets()
        with contextlib.suppress(FileNotFoundError):
            self._home.pid_path.unlink()
        os.close(self._fd)
        self._fd = None
