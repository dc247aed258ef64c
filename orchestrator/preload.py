"""Imported once by the orchestrator's forkserver: everything a worker needs, then frozen.

Workers are forked from that process, so these imports cost nothing per worker and their
memory stays shared (copy-on-write; ``gc.freeze`` keeps the collector from touching, and so
copying, the preloaded objects). No ZeroMQ context exists here: each worker makes its own.
"""

import asyncio  # noqa: F401 - multiprocessing re-runs the orchestrator's main module in
import gc  # each child; with its imports preloaded that costs nothing per worker
import os

import msgspec  # noqa: F401
import zmq  # noqa: F401
from setproctitle import setproctitle

import multibot.market.rules
import multibot.wire.home
import multibot.wire.protocol
import strategies.registry
import worker.main
import worker.runner  # noqa: F401

strategies.registry.builtins()  # import every built-in strategy module now
multibot.market.rules.bundled_rules()
for message_type in multibot.wire.protocol.MESSAGE_TYPES:  # shared by every worker
    multibot.wire.protocol.body_decoder(message_type)
setproctitle(os.environ.get("MULTIBOT_FORKSERVER_TITLE", "multibot-forkserver"))
gc.freeze()
