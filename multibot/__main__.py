"""``python -m multibot``: the CLI."""

from multibot.cli.app import main

main()
