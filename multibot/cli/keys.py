"""`multibot keys ...`: the CURVE keys of the remote (TCP) control endpoint.

Secret keys are never printed: only public keys and where the secret files are.
"""

# No `from __future__ import annotations`: typer reads the commands' annotations on each
# run, and as strings they would be compiled and evaluated each time (see multibot/cli/app.py).

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from multibot.exits import reported

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Fleet state directory [env MULTIBOT_HOME; default "
                 "~/.local/state/multibot]", show_default=False),
]
NameArg = Annotated[str, typer.Argument(help="key name: letters, digits, '_', '.', '-'",
                                        show_default=False)]


@contextlib.contextmanager
def _key_files() -> Iterator[None]:
    """A key file that cannot be read or written is the user's to fix, as a bad key is."""
    try:
        yield
    except OSError as exc:
        from multibot.wire.keystore import KeyStoreError

        raise KeyStoreError(str(exc)) from None


def generate(
    name: NameArg,
    home: HomeOption = None,
    authorize: Annotated[bool, typer.Option(
        "--authorize/--no-authorize",
        help="also allow this key to command this home's fleet")] = True,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="where to write the keypair [default <home>/keys/clients]",
        show_default=False)] = None,
) -> None:
    """Create a client keypair (for `multibot --connect ... --key NAME`)."""
    from multibot.wire.home import Home
    from multibot.wire.keystore import generate_client_key, load_public_key, shell_safe_key

    fleet_home = Home.at(home)
    with _key_files():
        secret_file = generate_client_key(fleet_home, name, authorize=authorize,
                                          directory=directory)
        public = shell_safe_key(load_public_key(secret_file.with_suffix(".key")))
    typer.echo(f"client key {name!r}")
    typer.echo(f"  public key   {public}")
    typer.echo(f"  public file  {secret_file.with_suffix('.key')}")
    typer.echo(f"  secret file  {secret_file}  (mode 0600: keep it private, never share it)")
    if authorize:
        typer.echo(f"  authorized to command the fleet on {fleet_home.root}")
    else:
        typer.echo(f"  not authorized here; on the fleet's machine run:\n"
                   f"    multibot keys authorize {secret_file.with_suffix('.key').name} "
                   f"--name {name}")


def list_(home: HomeOption = None) -> None:
    """Server, authorized and client keys of this home (public keys only)."""
    from multibot.wire.home import Home
    from multibot.wire.keystore import list_keys, shell_safe_key

    keys = list_keys(Home.at(home))
    if not keys:
        typer.echo("no keys yet (`multibot keys server`, `multibot keys generate NAME`)")
        return
    typer.echo(f"{'KIND':<11} {'NAME':<20} {'PUBLIC KEY (hex)':<64}  FILE")
    for info in keys:
        public = shell_safe_key(info.public_key.encode())
        typer.echo(f"{info.kind:<11} {info.name:<20} {public:<64}  {info.path}")


def authorize(
    file: Annotated[Path, typer.Argument(help="the client's public key file (*.key)",
                                         show_default=False)],
    name: Annotated[str, typer.Option("--name", help="name to record the key under",
                                      show_default=False)],
    home: HomeOption = None,
) -> None:
    """Allow a client's public key to command this fleet (takes effect at once)."""
    from multibot.wire.home import Home
    from multibot.wire.keystore import authorize as authorize_key

    with _key_files():
        path = authorize_key(Home.at(home), file, name)
    typer.echo(f"authorized {name!r}: {path}")


def revoke(name: NameArg, home: HomeOption = None) -> None:
    """Withdraw an authorized key (new connections with it are refused at once)."""
    from multibot.wire.home import Home
    from multibot.wire.keystore import revoke as revoke_key

    with _key_files():
        path = revoke_key(Home.at(home), name)
    typer.echo(f"revoked {name!r} ({path} removed)")


def server(home: HomeOption = None) -> None:
    """Print the server public key that remote clients need (created on first use)."""
    from multibot.wire.home import Home
    from multibot.wire.keystore import ensure_server_keys, keys_dir, shell_safe_key

    fleet_home = Home.at(home)
    with _key_files():
        public, _ = ensure_server_keys(fleet_home)
    typer.echo(shell_safe_key(public))
    key_file = keys_dir(fleet_home) / "server.key"
    typer.echo(f"(hex, safe to paste unquoted; public key file {key_file}; remote clients "
               "pass either as --server-key)", err=True)


def register(app: typer.Typer) -> None:
    """Add the `keys` command group to ``app``."""
    keys = typer.Typer(help="CURVE keys of the remote control endpoint (TCP is CURVE only).",
                       no_args_is_help=True, rich_markup_mode=None)
    for name, command in (("generate", generate), ("list", list_), ("authorize", authorize),
                          ("revoke", revoke), ("server", server)):
        keys.command(name)(reported(command))
    app.add_typer(keys, name="keys")
