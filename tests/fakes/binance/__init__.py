"""A local Binance spot server that the real python-binance client talks to (tests only).

``FakeBinance(...).start()`` serves the REST API and the market streams on 127.0.0.1 from a
background thread; see server.py for the inspection and fault API.
"""

from tests.fakes.binance.errors import FakeBinanceError
from tests.fakes.binance.server import FakeBinance
from tests.fakes.binance.state import RequestRecord

__all__ = ["FakeBinance", "FakeBinanceError", "RequestRecord"]
