"""OKX book protocol: the ``books`` channel on ``/ws/v5/public``.

- after subscribing, the venue sends ``action: "snapshot"`` (up to 400 levels per side,
  ``prevSeqId: -1``), then ``action: "update"`` messages; an update chains when its ``prevSeqId``
  equals the ``seqId`` of the message before (an update without changes has ``seqId ==
  prevSeqId``); anything else is a gap;
- OKX book checksum: after applying each message, the signed CRC32 of
  ``bid1px:bid1sz:ask1px:ask1sz:...`` over the best 25 levels per side, interleaved, as the wire
  strings; it must equal the message's ``checksum`` (``okx_checksum`` below);
- resync = unsubscribe and subscribe the symbol again: the venue sends a fresh snapshot.
- levels are ``[price, size, "0", orders]``; size ``"0"`` deletes.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from . import okx as trade_venue
from .base import BookVenue, Ignored, MalformedFrame, UnknownSymbol, json_object
from .book import ASK, BID, BookDelta, BookSnapshot, LocalBook
from .okx import Options

NAME = "okx"
CHECKSUM_LEVELS = 25
KEEPALIVE_INTERVAL = 15.0        # OKX drops a link that sent no text frame for 30 s


class OkxBook(BookVenue):
    """OKX order books, the book contract filled in (venues/base.py BookVenue)."""

    NAME = NAME
    Options = Options
    IDLE_TIMEOUT = 25.0
    SNAPSHOT_FROM = "ws"


instruments_request = OkxBook.member(trade_venue.instruments_request)


@OkxBook.member
def parse_instruments(body: Any) -> dict[str, str]:
    return {i.symbol: i.venue_symbol for i in trade_venue.parse_instruments(body)}


# --- sequencing rule and checksum ------------------------------------------------------------

@OkxBook.member
def stale(book_id: int, d: BookDelta) -> bool:
    return False       # the snapshot arrives in-stream: nothing before it is ever applied


@OkxBook.member
def continues(book_id: int, d: BookDelta) -> bool:
    return d.prev_id == book_id


aligns = OkxBook.member(continues, "aligns")


def okx_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """OKX book checksum: signed CRC32 of the best 25 bids and asks interleaved."""
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    v = zlib.crc32(":".join(parts).encode())
    return v - (1 << 32) if v >= 1 << 31 else v


@OkxBook.member
def checksum(book: LocalBook) -> int:
    return okx_checksum(book.top(BID, CHECKSUM_LEVELS), book.top(ASK, CHECKSUM_LEVELS))


# --- websocket -------------------------------------------------------------------------------

@OkxBook.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/ws/v5/public"


def _op(op: str, venue_symbols: list[str], rid: str | None = None) -> str:
    msg: dict = {"op": op, "args": [{"channel": "books", "instId": s} for s in venue_symbols]}
    if rid is not None:
        msg = {"id": rid, **msg}
    return orjson.dumps(msg).decode()


@OkxBook.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[Any, str]]:
    rid = f"b{first_id}"
    return [(rid, _op("subscribe", venue_symbols, rid))]


@OkxBook.member
def resubscribe_messages(venue_symbol: str, options: Options) -> list[str]:
    return [_op("unsubscribe", [venue_symbol]), _op("subscribe", [venue_symbol])]


@OkxBook.member
def keepalive(options: Options, session: object = None) -> tuple[float, str]:
    return float(options.ping_interval), "ping"


@OkxBook.member
class Parser:
    __slots__ = ("symbols", "_control")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols
        self._control = trade_venue.Parser(symbols, options)   # pong, acks, errors, notices

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        if frame == "pong" or frame == b"pong":
            return [Ignored("pong")]
        msg = json_object(frame)
        arg, data = msg.get("arg"), msg.get("data")
        if "event" in msg or not isinstance(arg, dict) or arg.get("channel") != "books":
            return self._control.parse(frame, recv_us)
        if not isinstance(data, list):
            raise MalformedFrame("books frame without data")
        sym = self.symbols.get(arg.get("instId"))
        if sym is None:
            return [UnknownSymbol(str(arg.get("instId")))]
        action = msg.get("action")
        out: list = []
        try:
            for d in data:
                ts = int(d["ts"]) * 1000
                seq, cs = int(d["seqId"]), int(d["checksum"])
                if action == "snapshot":
                    out.append(BookSnapshot(sym, d["bids"], d["asks"], update_id=seq, checksum=cs, ts_us=ts,
                                            recv_us=recv_us))
                elif action == "update":
                    out.append(BookDelta(sym, d["bids"], d["asks"], last_id=seq, prev_id=int(d["prevSeqId"]),
                                         checksum=cs, ts_us=ts, recv_us=recv_us))
                else:
                    raise MalformedFrame(f"books message with action {action!r}")
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"books message lacks or mistypes field {ex}") from None
        return out
