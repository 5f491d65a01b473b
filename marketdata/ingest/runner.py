"""`marketdata ingest --venue NAME`: one OS process per venue."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from ..config import load_config
from ..errors import ConfigError
from .connector import VenueConnector

log = logging.getLogger("marketdata.ingest")


async def _run(connector: VenueConnector) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await connector.run(stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="marketdata ingest", description="Run one venue's connector.")
    ap.add_argument("--venue", required=True, help="venue id from the config, e.g. binance")
    ap.add_argument("--config", default=None, help="config file (default $MARKETDATA_CONFIG or marketdata.yaml)")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)    # one line per REST call is noise
    try:
        cfg = load_config(args.config, resolve_only=[args.venue])    # its own venue's endpoints only
        if args.venue not in cfg.venues:
            raise ConfigError(f"venue {args.venue!r} is not enabled in {cfg.path}; enabled: {', '.join(cfg.venues)}")
        connector = VenueConnector(cfg.venues[args.venue])
        asyncio.run(_run(connector))
    except ConfigError as e:
        print(f"marketdata ingest: config error: {e}", file=sys.stderr)
        return 2
    return 1 if connector.unpublished else 0      # stopped while Redis was down: say so
