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
# the WebSocket API (the user data stream); a server named by its stream URL serves it at
# <stream URL>ws-api/v3, as Binance-protocol servers do
REAL_WS_API = {
    "live": "wss://ws-api.binance.com/ws-api/v3",
    "testnet": "wss://ws-api.testnet.binance.vision/ws-api/v3",
}
REST_ENV = "MULTIBOT_BINANCE_REST_URL"
STREAM_ENV = "MULTIBOT_BINANCE_STREAM_URL"
WS_API_ENV = "MULTIBOT_BINANCE_WS_API_URL"


@dataclass(frozen=True)
class Endpoints:
    network: str  # "live" | "testnet"
    rest_url: str  # python-binance's API_URL: ".../api" (it appends "/v3/<path>")
    stream_url: str  # python-binance's STREAM_URL: ".../" (it appends "ws/..." or "stream?...")
    ws_api_url: str = ""  # python-binance's WS_API_URL: the user data stream

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
    stream = stream if stream.endswith("/") else stream + "/"
    ws_api = env.get(WS_API_ENV) or (
        REAL_WS_API[network] if stream == real_stream else stream + "ws-api/v3")
    return Endpoints(network=network, rest_url=rest.rstrip("/"), stream_url=stream,
                     ws_api_url=ws_api)
