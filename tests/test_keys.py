"""CURVE key storage and the `multibot keys` CLI: private files, never overwritten, never
a secret in a listing or on the terminal."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from multibot import remote as client_remote
from multibot.cli.keys import register
from multibot.wire import endpoints, keystore
from multibot.wire.home import Home
from multibot.wire.keystore import load_keypair
from multibot.wire.protocol import Ping


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    server_public, _ = keystore.ensure_server_keys(home)
    secret = keystore.generate_client_key(home, "laptop")
    keys = keystore.keys_dir(home)
    for directory in (keys, keys / "authorized", keys / "clients"):
        assert _mode(directory) == 0o700
    assert _mode(secret) == 0o600 and _mode(keys / "server.key_secret") == 0o600
    authorized = keys / "authorized" / "laptop.key"
    assert "secret-key" not in authorized.read_text()
    assert "secret-key" not in secret.with_suffix(".key").read_text()
    before = secret.read_bytes()
    with pytest.raises(keystore.KeyStoreError, match="exists"):
        keystore.generate_client_key(home, "laptop", authorize=False)
    with pytest.raises(keystore.KeyStoreError, match="already authorized"):
        keystore.authorize(home, secret.with_suffix(".key"), "laptop-again")
    assert secret.read_bytes() == before
    assert keystore.ensure_server_keys(home)[0] == server_public  # stable, not regenerated
    for bad in ["", "../x", ".hidden", "a/b", "x" * 65, "-rf", "with space", "é"]:
        with pytest.raises(keystore.KeyStoreError, match="bad key name"):
            keystore.generate_client_key(home, bad)
    with pytest.raises(keystore.KeyStoreError, match="cannot read"):
        keystore.authorize(home, tmp_path / "missing.key", "nope")
    (tmp_path / "junk.key").write_text('public-key = "too short"\n')
    with pytest.raises(keystore.KeyStoreError, match="not a CURVE public key"):
        keystore.authorize(home, tmp_path / "junk.key", "junk")


def test_listing_and_client_side_never_expose_or_accept_bad_secrets(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    keystore.ensure_server_keys(home)
    laptop = keystore.generate_client_key(home, "laptop")
    keystore.generate_client_key(home, "phone", authorize=False)
    listed = keystore.list_keys(home)
    assert {(k.kind, k.name) for k in listed} == {
        ("server", "server"), ("authorized", "laptop"), ("client", "laptop"),
        ("client", "phone")}
    secrets = [load_keypair(p)[1].decode() for p in keystore.keys_dir(home).rglob("*_secret")]
    assert len(secrets) == 3 and all(s not in repr(listed) for s in secrets)
    assert all(k.path.suffix == ".key" for k in listed)
    with pytest.raises(keystore.KeyStoreError, match="no secret key"):
        client_remote.remote_request("127.0.0.1:9", b"x" * 40, keystore.authorized_dir(home) /
                              "laptop.key", Ping(), 0.1)
    os.chmod(laptop, 0o644)
    with pytest.raises(keystore.KeyStoreError, match="readable by other users"):
        load_keypair(laptop)
    os.chmod(laptop, 0o600)
    with pytest.raises(endpoints.EndpointError):
        client_remote.remote_request("ipc:///tmp/c.sock", b"x" * 40, laptop, Ping(), 0.1)
    server_public = keystore.ensure_server_keys(home)[0]
    target = client_remote.RemoteTarget.resolve(home, "10.0.0.5:7070", "laptop",
                                                server_public.decode())
    assert target == client_remote.RemoteTarget("tcp://10.0.0.5:7070", server_public, laptop)
    by_file = client_remote.RemoteTarget.resolve(home, "tcp://h:1", str(laptop),
                                          str(keystore.keys_dir(home) / "server.key"))
    assert by_file.server_public_key == server_public and by_file.client_key_file == laptop
    with pytest.raises(keystore.KeyStoreError):
        client_remote.RemoteTarget.resolve(home, "h:1", "laptop", "not-a-key")


def test_keys_cli(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner, home = CliRunner(), tmp_path / "h"

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["keys", *args, "--home", str(home)])
        return result.exit_code, result.output

    code, out = run("generate", "laptop")
    secret_file = home / "keys" / "clients" / "laptop.key_secret"
    public, secret = load_keypair(secret_file)
    # keys are printed in hex: z85 holds characters a shell expands (! * { ) [)
    assert code == 0 and keystore.shell_safe_key(public) in out and str(secret_file) in out
    assert secret.decode() not in out and public.decode() not in out
    assert run("generate", "laptop")[0] == 2
    assert run("generate", "../evil")[0] == 2
    code, out = run("generate", "phone", "--no-authorize")
    assert code == 0 and "keys authorize phone.key --name phone" in out
    code, out = run("server")
    server_public, server_secret = keystore.ensure_server_keys(Home(home))
    assert code == 0 and out.split()[0] == keystore.shell_safe_key(server_public)
    assert re.fullmatch(r"[0-9a-f]{64}", out.split()[0]) and server_secret.decode() not in out
    code, out = run("authorize", str(home / "keys" / "clients" / "phone.key"), "--name", "phone")
    assert code == 0 and (home / "keys" / "authorized" / "phone.key").exists()
    code, out = run("list")
    assert code == 0 and out.count("authorized ") == 2 and keystore.shell_safe_key(public) in out
    assert secret.decode() not in out and server_secret.decode() not in out
    assert run("revoke", "phone")[0] == 0 and run("revoke", "phone")[0] == 2


def test_a_public_key_is_accepted_in_hex_or_z85(tmp_path: Path) -> None:
    public, _ = keystore.ensure_server_keys(Home(tmp_path / "h"))
    hex_form = keystore.shell_safe_key(public)
    assert keystore.parse_public_key(hex_form) == public
    assert keystore.parse_public_key(hex_form.upper() + "\n") == public
    assert keystore.parse_public_key(public.decode()) == public
    for bad in ("", hex_form[:-1], hex_form[:-1] + "g", public.decode()[:-1]):
        with pytest.raises(keystore.KeyStoreError, match="64 hex digits"):
            keystore.parse_public_key(bad)
