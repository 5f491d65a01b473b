"""Small operator tools: `tail` (stream entries as ticks; a stream that does not exist is named,
with similar ones) and `decode` (raw frames -> ticks)."""

from __future__ import annotations

import difflib
import sys
from typing import IO

import orjson

from . import venues as venue_registry
from .clock import now_us
from .storage.redis import client
from .stream import STREAMS_SET, decode_entry, parse_stream_key, stream_key
from .venues.base import MalformedFrame, Replay, UnknownSymbol, Unrecognised, Unsequenced, VenueError
from .tick import Tick


class NoSuchStream(LookupError):
    """`tail` of a stream that does not exist and that no configured venue will write."""


def _check_stream(r, target: str, key: str, config_path: str | None) -> None:
    """Return when ``key`` exists or the config's venues will write it (the platform may be
    starting); else raise NoSuchStream naming the streams that look like ``target``."""
    if r.exists(key):
        return
    from .config import load_config
    from .errors import ConfigError
    configured: set[str] = set()
    try:
        cfg = load_config(config_path, resolve_endpoints=False)
        configured = {f"{n}:{s}" for n, v in cfg.venues.items() for s in v.symbols}
    except (ConfigError, OSError):
        pass
    if target in configured:
        return
    known = {f"{e}:{s}" for e, s in (parse_stream_key(k) for k in r.smembers(STREAMS_SET))} | configured
    by_lower = {k.lower(): k for k in sorted(known)}
    close = [by_lower[m] for m in difflib.get_close_matches(target.lower(), list(by_lower), n=5, cutoff=0.6)]
    hint = (f"similar: {', '.join(close)}" if close else
            f"known: {', '.join(sorted(known)[:20])}" if known else "no stream exists in this Redis yet")
    raise NoSuchStream(f"no stream {target} ({key}) in Redis, and no configured venue writes it; {hint}")


def tail(target: str, *, from_start: bool = False, count: int | None = None, out: IO = sys.stdout,
         block_ms: int = 1000, redis_url: str | None = None, config_path: str | None = None) -> int:
    """Print ticks (and coverage marks and gaps, as JSON lines) of EXCHANGE:SYMBOL as they arrive.
    Raises NoSuchStream (at once, never waiting) for a stream that neither exists nor is configured."""
    exchange, sep, symbol = target.partition(":")
    if not sep or not exchange or not symbol:
        raise SystemExit("tail: expected EXCHANGE:SYMBOL, e.g. binance:BTC-USDT")
    r = client(redis_url)
    key = stream_key(exchange, symbol)
    _check_stream(r, target, key, config_path)
    last = "0-0" if from_start else "$"
    printed = 0
    while count is None or printed < count:
        resp = r.xread({key: last}, block=block_ms, count=100)
        for _, entries in resp or []:
            for eid, fields in entries:
                last = eid
                e = decode_entry(fields)
                for t in e.ticks:
                    out.write(orjson.dumps(t.as_dict()).decode() + "\n")
                    printed += 1
                if e.coverage:
                    out.write(orjson.dumps({"coverage": [e.coverage.from_us, e.coverage.to_us],
                                            "exchange": exchange, "symbol": symbol}).decode() + "\n")
                for g in e.gaps:
                    out.write(orjson.dumps({"gap": g.as_dict()}).decode() + "\n")
                out.flush()
                if count is not None and printed >= count:
                    return 0
    return 0


# `marketdata decode --venue NAME` for a protocol variant of a venue: NAME -> (venue, options)
DECODE_VARIANTS = {"kraken-v1": ("kraken", {"protocol": "v1"})}


def decode(venue: str, symbols: list[str], inp: IO = sys.stdin, out: IO = sys.stdout,
           err: IO = sys.stderr, options: dict | None = None) -> dict:
    """Read raw frames (one per line, as received) and print canonical ticks as JSON lines, with the
    connector's own parser. Snapshot trades (Bitfinex) and trades without a sequence field (Gate.io
    before `id_market`) are ticks too. Returns counts of ticks, malformed frames, unrecognised
    frames, unknown symbols and unsequenced trades."""
    mod = venue_registry.get(venue)
    options = mod.validate_options(options)
    parser = mod.Parser({mod.to_venue_symbol(s): s for s in symbols}, options)
    counts = {"frames": 0, "ticks": 0, "malformed": 0, "unrecognised": 0, "unknown_symbol": 0,
              "unsequenced": 0, "other": 0}

    def emit(t: Tick) -> None:
        out.write(orjson.dumps(t.as_dict()).decode() + "\n")
        counts["ticks"] += 1

    for line in inp:
        line = line.rstrip("\r\n")
        if not line:
            continue
        counts["frames"] += 1
        try:
            events = parser.parse(line, now_us())
        except MalformedFrame as e:
            counts["malformed"] += 1
            err.write(f"{venue}: malformed frame {counts['frames']}: {e}\n")
            continue
        for ev in events:
            if isinstance(ev, Tick):
                emit(ev)
            elif isinstance(ev, Replay):
                for t in ev.ticks:
                    emit(t)
            elif isinstance(ev, Unsequenced):
                counts["unsequenced"] += 1
                emit(ev.tick)
            elif isinstance(ev, Unrecognised):
                counts["unrecognised"] += 1
                err.write(f"{venue}: frame {counts['frames']} not recognised ({ev.kind}"
                          f"{': ' + ev.detail if ev.detail else ''})\n")
            elif isinstance(ev, UnknownSymbol):
                counts["unknown_symbol"] += 1
                err.write(f"{venue}: unknown symbol {ev.venue_symbol!r} in frame {counts['frames']} "
                          f"(known: {', '.join(symbols) or 'none; pass --symbols'})\n")
            elif isinstance(ev, VenueError):
                counts["other"] += 1
                err.write(f"{venue}: venue error {ev.code}: {ev.message}\n")
            else:
                counts["other"] += 1
    out.flush()
    return counts
