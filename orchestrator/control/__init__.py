"""The control socket: what `multibot up/status/kill/down` ask of the fleet.

One module per command (``base.Command``: the request it answers, its validation, its
execution); ``server`` reads the socket and dispatches through the table of commands. How a
reply looks on a console is the CLI's business (``multibot.cli``), never the daemon's.
"""
