"""Which Binance to talk to: real Binance, Binance's testnet, or any Binance-protocol server.

Precedence: the environment (``MULTIBOT_BINANCE_REST_URL``, ``MULTIBOT_BINANCE_STREAM_URL``)
beats the fleet settings (``--rest-url``/``--stream-url`` or the config's ``[binance]``), which
beat the network's real endpoints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

REAL_ENDPOINTS = {
    "live": ("https://api.binance.com/api", "wss://stream.binance.com:9443/"),
    "testnet": ("https://testnet.binance.vision/api", "wss://stream.testnet.binance.vision/"),
}
REST_ENV = "MULTIBOT_BINANCE_REST_URL"
STREAM_ENV = "MULTIBOT_BINANCE_STREAM_URL"


@dataclass(frozen=True)
class Endpoints:
    network: str  # "live" | "testnet"
    rest_url: str  # python-binance's API_URL: ".../api" (it appends "/v3/<path>")
    stream_url: str  # python-binance's STREAM_URL: ".../" (it appends "ws/..." or "stream?...")

    @property
    def host(self) -> str:
        """For status and logs: the REST endpoint without its path."""
        scheme, _, rest = self.rest_url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"


def resolve_endpoints(network: str, rest_url: str = "", stream_url: str = "",
                      environ: Mapping[str, str] | None = None) -> Endpoints:
    env = os.environ if environ is None else environ
    real_rest, real_stream = REAL_ENDPOINTS[network]
    rest = env.get(REST_ENV) or rest_url or real_rest
    stream = env.get(STREAM_ENV) or stream_url or real_stream
    return Endpoints(network=network, rest_url=rest.rstrip("/"),
                     stream_url=stream if stream.endswith("/") else stream + "/")
