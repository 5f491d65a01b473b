"""``marketdata simulate`` / ``python -m marketdata.simulator``.

Starts the configured venues, prints one JSON line ``{venue: {"ws": ..., "rest": ...}}`` to stdout
(and writes it to ``--endpoints-file``), serves until SIGINT/SIGTERM, flushes the ground truth and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from .core import Simulator, SimulatorConfig, available_venues, write_endpoints_file
from .listings import unlisted, unlisted_message


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="marketdata simulate",
        description="Local exchange simulator (WebSocket + REST per venue) with ground truth and faults.",
    )
    p.add_argument("--venues", default="binance", help=f"comma list; available: {','.join(available_venues())}")
    p.add_argument("--symbols", action="append", default=None, metavar="[VENUE:]SYM,SYM",
                   help="canonical symbols (BTC-USDT,ETH-USDT) for every venue, or VENUE:SYM,SYM for one venue; "
                        "repeatable (default BTC-USDT,ETH-USDT)")
    p.add_argument("--rate", type=float, default=1000.0, help="trades per wall second per venue (default 1000)")
    p.add_argument("--venue-rate", action="append", default=[], metavar="VENUE=RATE", help="per-venue rate override")
    p.add_argument("--symbol-weight", action="append", default=[], metavar="SYM=WEIGHT",
                   help="relative trade frequency of a symbol (default 1 each)")
    p.add_argument("--seed", default="7", help="generator seed (default 7)")
    p.add_argument("--start", default=None, help="simulated start time, ISO 8601 or epoch (default now)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    p.add_argument("--end", default=None, help="simulated time after which no trades are generated")
    p.add_argument("--ground-truth", default=None, metavar="PATH", help="CSV of every generated trade")
    p.add_argument("--history-minutes", type=float, default=None, metavar="MINUTES",
                   help="keep only this much simulated time of trades for REST history and candles "
                        "(memory stays bounded; default: keep every trade)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="first venue's port; 0 = free ports (default)")
    p.add_argument("--ping-interval", type=float, default=20.0, help="server ping every N s (default 20)")
    p.add_argument("--pong-timeout", type=float, default=60.0, help="drop clients without pong for N s (default 60)")
    p.add_argument("--endpoints-file", default=None, metavar="PATH", help="also write the endpoints JSON here")
    p.add_argument("--slice-ms", type=float, default=5.0, help="generation step in wall ms (default 5)")
    p.add_argument("--max-send-buffer", type=int, default=32 * 1024 * 1024,
                   help="bytes buffered per connection before a slow client is dropped")
    p.add_argument("--venue-option", action="append", default=[], metavar="VENUE.KEY=VALUE",
                   help="venue option, value parsed as JSON when possible (e.g. binance.max_incoming_per_s=0)")
    p.add_argument("--paused", action="store_true", help="start with generation paused")
    p.add_argument("--hold-clock", action="store_true",
                   help="with --paused: simulated time stands at --start until the first resume, so a "
                        "client that is slow to connect still sees the whole run")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    p.add_argument("--listed-only", action="store_true",
                   help="refuse symbols the modelled venue would not list (listings.py); `up` passes it")
    p.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR (default WARNING)")
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    venues = _csv(args.venues)
    symbols: list[str] | dict[str, list[str]]
    specs = args.symbols or ["BTC-USDT,ETH-USDT"]
    per_venue: dict[str, list[str]] = {}
    common: list[str] = []
    for spec in specs:
        head, sep, tail = spec.partition(":")
        if sep and head.strip().lower() in available_venues() + venues:
            per_venue.setdefault(head.strip().lower(), []).extend(_csv(tail))
        else:
            common.extend(_csv(spec))
    if per_venue:
        symbols = {v: per_venue.get(v, common) for v in venues}
    else:
        symbols = common
    rates = {}
    for item in args.venue_rate:
        v, _, r = item.partition("=")
        rates[v.strip()] = float(r)
    weights = {}
    for item in args.symbol_weight:
        sym, _, w = item.partition("=")
        weights[sym.strip().upper()] = float(w)
    options: dict[str, dict[str, Any]] = {}
    for item in args.venue_option:
        key, _, value = item.partition("=")
        v, _, k = key.partition(".")
        if not k:
            raise SystemExit(f"--venue-option expects VENUE.KEY=VALUE, got {item!r}")
        options.setdefault(v.strip(), {})[k.strip()] = _option_value(value)
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    return SimulatorConfig(
        venues=venues, symbols=symbols, rate=args.rate, rates=rates, seed=seed, start=args.start,
        symbol_weights=weights, speed=args.speed, end=args.end, ping_interval=args.ping_interval, pong_timeout=args.pong_timeout,
        ground_truth=args.ground_truth, history_s=None if args.history_minutes is None else args.history_minutes * 60,
        host=args.host, port=args.port, slice_ms=args.slice_ms,
        max_send_buffer=args.max_send_buffer, venue_options=options, paused=args.paused,
        hold_clock=args.hold_clock,
        use_uvloop=not args.no_uvloop,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = config_from_args(args)
        if args.listed_only:
            for v in config.venues:
                bad = unlisted(v, config.symbols_for(v))
                if bad:
                    raise ValueError(unlisted_message(v, bad))
        sim = Simulator(config)
    except ValueError as exc:
        print(f"marketdata simulate: {exc}", file=sys.stderr)
        return 2

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        await sim.start_async()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sim.request_stop)
        line = json.dumps(sim.endpoints, separators=(",", ":"))
        if args.endpoints_file:
            write_endpoints_file(args.endpoints_file, line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        await sim.serve_forever()

    loop = sim._new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve())
    except OSError as exc:
        print(f"marketdata simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        if sim.running:
            loop.run_until_complete(sim.stop_async())
        loop.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
