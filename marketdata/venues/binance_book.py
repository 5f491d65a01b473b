"""Binance book protocol: diff depth stream ``<sym>@depth@100ms`` plus the REST snapshot
``/api/v3/depth``, synced the way Binance documents it:

- buffer the stream's ``depthUpdate`` events, then fetch the snapshot (``lastUpdateId``);
- drop events with ``u <= lastUpdateId``; the first applied event must straddle the snapshot,
  ``U <= lastUpdateId + 1 <= u``; every following event must have ``U`` = previous ``u`` + 1,
  anything else is a gap (resync: a new snapshot, keeping the stream);
- quantities are absolute, ``"0"`` deletes the level. There is no checksum.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import binance as trade_venue
from .base import (Ack, BookVenue, HttpRequest, Ignored, MalformedFrame, Reconnect, UnknownSymbol, VenueError,
                   json_object)
from .binance import Options
from .book import BookDelta, BookSnapshot

NAME = "binance"
SNAPSHOT_LIMIT = 5000
STREAM_SUFFIX = "@depth@100ms"


class BinanceBook(BookVenue):
    """Binance order books, the book contract filled in (venues/base.py BookVenue)."""

    NAME = NAME
    Options = Options
    IDLE_TIMEOUT = 30.0
    SNAPSHOT_FROM = "rest"
    DEPTH = None                    # full book: the snapshot holds up to 5000 levels per side
    RETRY_AFTER = trade_venue.Binance.RETRY_AFTER    # the same REST, the same 429/418 rule


instruments_request = BinanceBook.member(trade_venue.instruments_request)


@BinanceBook.member
def parse_instruments(body: Any) -> dict[str, str]:
    """canonical symbol -> venue symbol"""
    return {i.symbol: i.venue_symbol for i in trade_venue.parse_instruments(body)}


# --- sequencing rule -------------------------------------------------------------------------

@BinanceBook.member
def stale(book_id: int, d: BookDelta) -> bool:
    return d.last_id <= book_id


@BinanceBook.member
def aligns(book_id: int, d: BookDelta) -> bool:
    return d.first_id <= book_id + 1 <= d.last_id


@BinanceBook.member
def continues(book_id: int, d: BookDelta) -> bool:
    return d.first_id == book_id + 1


# --- websocket -------------------------------------------------------------------------------

@BinanceBook.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/stream"


@BinanceBook.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[Any, str]]:
    # 5 inbound messages/s at most: one SUBSCRIBE per 200 streams.
    names = [vs.lower() + STREAM_SUFFIX for vs in venue_symbols]
    out = []
    for i in range(0, len(names), 200):
        rid = first_id + len(out)
        out.append((rid, orjson.dumps({"method": "SUBSCRIBE", "params": names[i:i + 200], "id": rid}).decode()))
    return out


@BinanceBook.member
def keepalive(options: Options, session: object = None) -> tuple[float, str] | None:
    return None          # WebSocket ping frames, answered by the library


@BinanceBook.member
class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols          # venue symbol -> canonical

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        msg = json_object(frame)
        data = msg.get("data", msg) if "stream" in msg else msg
        if not isinstance(data, dict):
            raise MalformedFrame("data is not a JSON object")
        e = data.get("e")
        if e == "depthUpdate":
            try:
                vs = data["s"]
                sym = self.symbols.get(vs)
                if sym is None:
                    return [UnknownSymbol(vs)]
                first, last = data["U"], data["u"]
                if not (isinstance(first, int) and isinstance(last, int)):
                    raise TypeError("U/u")
                return [BookDelta(sym, data["b"], data["a"], first_id=first, last_id=last,
                                  ts_us=int(data["E"]) * 1000, recv_us=recv_us)]
            except (KeyError, TypeError, ValueError) as ex:
                raise MalformedFrame(f"depthUpdate lacks or mistypes field {ex}") from None
        if e == "serverShutdown":
            return [Reconnect("serverShutdown")]
        if "result" in msg and "id" in msg:
            return [Ack(msg["id"])]
        if "code" in msg and "msg" in msg:
            return [VenueError(msg["code"], str(msg["msg"]), msg.get("id"))]
        if e is None:
            raise MalformedFrame("frame has no event type")
        return [Ignored(str(e))]


# --- REST snapshot ---------------------------------------------------------------------------

@BinanceBook.member
def snapshot_request(venue_symbol: str, options: Options) -> HttpRequest:
    return HttpRequest("GET", "/api/v3/depth", {"symbol": venue_symbol, "limit": SNAPSHOT_LIMIT}, weight=250)


@BinanceBook.member
def parse_snapshot(body: Any, symbol: str, recv_us: int) -> BookSnapshot:
    try:
        return BookSnapshot(symbol, body["bids"], body["asks"], update_id=int(body["lastUpdateId"]),
                            ts_us=recv_us, recv_us=recv_us)
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"depth snapshot lacks or mistypes field {ex}") from None


