"""Local exchange simulator: each venue's WebSocket and REST protocol on localhost, driven by a
seeded deterministic trade generator, with a ground-truth CSV and faults on demand.

The simulator never imports ``marketdata.venues``/``marketdata.ingest``: it encodes each venue's
wire format itself from ``../shared/reference/``.

Quick use::

    from marketdata.simulator import Simulator, SimulatorConfig

    cfg = SimulatorConfig(venues=["binance"], symbols=["BTC-USDT"], rate=2000, seed=7,
                          start="2026-01-05T10:00:00Z", speed=60, ground_truth="gt.csv")
    with Simulator(cfg) as sim:
        ws_url = sim.endpoints["binance"]["ws"]      # ws://127.0.0.1:PORT
        sim.fault("binance", "skip_ids", symbol="BTC-USDT", count=5)

Layout: ``clock`` (simulated time), ``generator`` (seeded taker orders, column tape),
``groundtruth`` (CSV), ``faults`` (registry), ``conn`` (raw WebSocket frames, backpressure),
``book`` (deterministic order books), ``venue`` (venue-neutral server plumbing + ``/_sim`` control
API), ``binance`` / ``okx`` / ``kucoin`` / ``kraken`` (wire formats),
``core`` (``SimulatorConfig``, ``Simulator``), ``cli`` (``main``), ``process`` (subprocess helper).
"""

from .clock import SimClock, format_time_us, parse_time_us
from .core import Simulator, SimulatorConfig, available_venues
from .faults import FAULT_KINDS, FaultError
from .process import SimulatorProcess

__all__ = [
    "FAULT_KINDS",
    "FaultError",
    "SimClock",
    "Simulator",
    "SimulatorConfig",
    "SimulatorProcess",
    "available_venues",
    "format_time_us",
    "parse_time_us",
]
