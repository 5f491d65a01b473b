"""The recorded-frame corpus (marketdata_tests/corpus/<venue>/frames.jsonl): loading it, and
running one case through a venue's own parser into plain, comparable values.

Each line is one case: `frame` (the raw text as received), `setup` (frames fed first, for
per-connection state such as channel ids; their events are not asserted), `symbols`
(canonical), `options`, `expect` (the events, in order) and `source` (where the frame comes
from: the venue's documentation or an open-source recorder's capture). Expected values were
written by hand from the frames; nothing in them comes from the simulator or the parsers.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from marketdata import venues
from marketdata.tick import Tick
from marketdata.venues.base import (Ack, Ignored, LastTradeId, MalformedFrame, Pause, Reconnect, Replay,
                                    UnknownSymbol, Unrecognised, Unsequenced, VenueError)

CORPUS = Path(__file__).parent / "corpus"
RECV_US = 1_700_000_000_000_000

_KINDS = {Ack: "ack", Ignored: "ignored", Unrecognised: "unrecognised", UnknownSymbol: "unknown_symbol",
          VenueError: "venue_error", LastTradeId: "last_trade_id", Reconnect: "reconnect", Pause: "pause"}


def load(venue: str) -> list[dict]:
    with open(CORPUS / venue / "frames.jsonl", "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def parser_for(venue: str, case: dict):
    mod = venues.get(venue)
    options = mod.validate_options(case["options"])
    return mod.Parser({mod.to_venue_symbol(s): s for s in case["symbols"]}, options)


def tick_view(t: Tick) -> dict:
    """The canonical fields a case asserts; a single trade's OHLC must all be its price."""
    assert t.open == t.high == t.low == t.close, t
    return {"symbol": t.symbol, "ts_us": t.ts_us, "price": t.close, "qty": t.volume, "side": t.side,
            "trade_id": t.trade_id, "trade_count": t.trade_count, "event": t.event}


def view(ev) -> dict:
    if type(ev) is Tick:
        return {"tick": tick_view(ev)}
    if type(ev) is Replay:
        return {"replay": [tick_view(t) for t in ev.ticks]}
    if type(ev) is Unsequenced:
        return {"unsequenced": tick_view(ev.tick), "missing": ev.missing}
    return {"event": _KINDS[type(ev)]}


def run(venue: str, case: dict) -> tuple[list, list]:
    """(events of the case's frame as plain values, the ticks themselves)."""
    parser = parser_for(venue, case)
    for f in case["setup"]:
        parser.parse(f, RECV_US)
    try:
        events = parser.parse(case["frame"], RECV_US)
    except MalformedFrame:
        return [{"malformed": True}], []
    return [view(e) for e in events], events
