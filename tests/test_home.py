"""A home's private directories: created 0700, and nothing planted there is ever trusted.

Another local user who creates ``<home>/run`` as a symlink, or the short-socket directory
under the system temp directory before us, would otherwise get our CLI and workers talking
to their sockets. These tests run as root in CI: a "foreign" directory is chowned to nobody.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from multibot.wire import home as home_module, keystore
from multibot.wire.home import Home, HomeError, HomeLock

NOBODY = 65534


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _foreign_dir(path: Path) -> Path:
    """A directory another user made (needs root: CI runs the tests as root)."""
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    _open_dir(path)
    os.chown(path, NOBODY, NOBODY)
    return path


def _open_dir(path: Path) -> Path:
    """A directory anyone may write in (what a planted one would be)."""
    path.mkdir()
    path.chmod(0o777)
    return path


def _long_home(tmp_path: Path) -> Path:
    """A home whose <home>/run/control.sock is too long for ipc://: its sockets go elsewhere."""
    return tmp_path / ("h" * 120)


def test_a_normal_home_is_created_private_and_locked(tmp_path: Path) -> None:
    home = Home.at(tmp_path / "home")
    (tmp_path / "home").mkdir(mode=0o755)  # our own, too open: made private, not refused
    lock = HomeLock(home)
    lock.acquire()
    try:
        for directory in (home.root, home.run_dir, home.logs_dir):
            assert _mode(directory) == 0o700, directory
        assert home.read_pid() == os.getpid()
        Home.at(home.root)  # what every later command does: accepted
    finally:
        lock.release()


def test_a_symlink_at_run_is_refused(tmp_path: Path) -> None:
    elsewhere = _open_dir(tmp_path / "elsewhere")
    root = tmp_path / "home"
    root.mkdir()
    (root / "run").symlink_to(elsewhere)
    with pytest.raises(HomeError, match=r"refusing .*home/run: it is a symbolic link "
                                        r"\(to .*elsewhere\)"):
        Home.at(root)
    with pytest.raises(HomeError, match="symbolic link"):
        HomeLock(Home(root)).acquire()
    assert _mode(elsewhere) == 0o777  # never chmodded through the link
    assert not (elsewhere / "orchestrator.lock").exists()


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    _foreign_dir(root / "logs")
    with pytest.raises(HomeError, match=rf"refusing .*home/logs: it is owned by uid {NOBODY}, "
                                        rf"not by this user \(uid {os.geteuid()}\)"):
        Home(root).ensure()
    assert _mode(root / "logs") == 0o777  # left as found
    with pytest.raises(HomeError, match=f"owned by uid {NOBODY}"):
        Home.at(_foreign_dir(tmp_path / "theirs"))


def test_a_file_where_a_directory_belongs_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "run").write_text("")
    with pytest.raises(HomeError, match="run: it is not a directory"):
        Home(root).ensure()


@pytest.fixture
def socket_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp directory of the short-socket fallback, private to this test."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(home_module, "_SOCKET_BASE", base)
    return base


def test_the_socket_fallback_is_private_and_checked(tmp_path: Path, socket_base: Path) -> None:
    home = Home.at(_long_home(tmp_path))
    assert home.socket_dir.parent == socket_base / f"multibot-{os.getuid()}"
    home.ensure()
    for directory in (home.socket_dir.parent, home.socket_dir):
        assert _mode(directory) == 0o700, directory


@pytest.mark.parametrize("planted", ["user_dir_symlink", "user_dir_foreign", "digest_symlink",
                                     "digest_foreign"])
def test_a_planted_socket_fallback_dir_is_refused(tmp_path: Path, socket_base: Path,
                                                  planted: str) -> None:
    home = Home(_long_home(tmp_path))
    user_dir = home.socket_dir.parent
    decoy = _open_dir(tmp_path / "decoy")
    if planted.startswith("digest"):
        user_dir.mkdir(mode=0o700)
    target = user_dir if planted.startswith("user_dir") else home.socket_dir
    if planted.endswith("symlink"):
        target.symlink_to(decoy)
        expected = "it is a symbolic link"
    else:
        _foreign_dir(target)
        expected = f"it is owned by uid {NOBODY}"
    with pytest.raises(HomeError, match=f"refusing {target}: {expected}"):
        Home.at(home.root)  # a CLI command or a worker never connects there
    with pytest.raises(HomeError, match=f"refusing {target}: {expected}"):
        home.ensure()  # nor does an orchestrator bind there
    assert _mode(decoy) == 0o777 and not list(decoy.iterdir())


def test_keystore_dirs_refuse_symlinks_and_other_users(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    decoy = _open_dir(tmp_path / "decoy")
    keystore.keys_dir(home).symlink_to(decoy)
    with pytest.raises(keystore.KeyStoreError, match=r"keys: it is a symbolic link"):
        keystore.ensure_server_keys(home)
    assert not list(decoy.iterdir())
    theirs = _foreign_dir(tmp_path / "theirs")
    with pytest.raises(keystore.KeyStoreError, match=f"theirs: it is owned by uid {NOBODY}"):
        keystore.generate_client_key(home, "laptop", authorize=False, directory=theirs)


def test_the_cli_reports_a_planted_directory_and_fails(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "run").symlink_to(tmp_path)
    for command in ("status", "down", "logs"):
        args = [command, "orchestrator"] if command == "logs" else [command]
        proc = subprocess.run([sys.executable, "-m", "multibot", *args, "--home", str(root)],
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"error: refusing {root / 'run'}: it is a symbolic link"), \
            (command, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_a_stale_pid_file_becomes_private_when_the_lock_is_taken(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    home.ensure()
    home.pid_path.write_text("12345\n")
    home.pid_path.chmod(0o666)  # left by a crash under another umask
    lock = HomeLock(home)
    lock.acquire()
    try:
        assert home.pid_path.stat().st_mode & 0o777 == 0o600
        assert home.read_pid() == os.getpid()
    finally:
        lock.release()
