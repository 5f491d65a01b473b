"""Kraken book protocol: WebSocket v1 ``book`` (``book-N``) on ``/``.

- subscribe per pair (wsname, ``XBT/USD``); the venue answers ``subscriptionStatus`` with a
  ``channelID``, then a snapshot ``[cid, {"as": .., "bs": ..}, "book-N", pair]`` and updates
  ``[cid, {"a": ..}(, {"b": ..}), "book-N", pair]`` whose last dict carries ``"c"``;
- levels ``[price, volume, time(, "r")]``, volume 0 deletes; the client keeps a top-N view and
  truncates levels pushed below N (the venue sends nothing for them);
- there is no sequence number: a lost update shows only as a failed checksum. Kraken book
  checksum: unsigned CRC32 over the best 10 asks (ascending) then the best 10 bids (descending),
  each level's price and volume with ``.`` removed and leading zeros stripped;
- resync = unsubscribe and subscribe the pair again (a new channel id, a fresh snapshot).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from .base import Ack, BookVenue, HttpRequest, Ignored, MalformedFrame, Reconnect, UnknownSymbol, VenueError
from .retry_after import RetryAfter
from .book import ASK, BID, BookDelta, BookSnapshot, LocalBook
from .kraken import BOOK_DEPTHS, Options

NAME = "kraken"
# Default view 10 = the checksummed levels: then every lost update fails the next checksum. With a
# deeper view (option book_depth: 25 | 100 | 500 | 1000) a lost change below the top 10 is only
# detected once it reaches the top 10 (or never, if it drifts out of the view first).
DEPTH = 10
DEPTHS = BOOK_DEPTHS            # one list, validated with the venue options
CHECKSUM_LEVELS = 10
_ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}


class KrakenBook(BookVenue):
    """Kraken order books, the book contract filled in (venues/base.py BookVenue)."""

    NAME = NAME
    Options = Options
    IDLE_TIMEOUT = 10.0             # the venue sends a heartbeat every second when idle
    SNAPSHOT_FROM = "ws"
    DEPTH = DEPTH
    RETRY_AFTER = RetryAfter(header=None)         # books wait 1 s on a 429, whatever the header says


@KrakenBook.member
def book_depth(options: Options) -> int:
    d = int(options.book_depth)
    if d not in DEPTHS:
        raise ValueError(f"book_depth must be one of {DEPTHS}, not {d}")
    return d


@KrakenBook.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/0/public/AssetPairs")


@KrakenBook.member
def parse_instruments(body: Any) -> dict[str, str]:
    if not isinstance(body, dict) or body.get("error") or not isinstance(body.get("result"), dict):
        raise MalformedFrame(f"kraken AssetPairs answer: {str(body)[:200]}")
    out = {}
    for info in body["result"].values():
        ws = info.get("wsname")
        if not ws or info.get("status", "online") != "online":
            continue            # dark-pool pairs have no wsname
        base, _, quote = ws.partition("/")
        out[f"{_ASSET_ALIASES.get(base, base)}-{_ASSET_ALIASES.get(quote, quote)}"] = ws
    return out


# --- sequencing rule and checksum ------------------------------------------------------------

@KrakenBook.member
def stale(book_id, d: BookDelta) -> bool:
    return False


@KrakenBook.member
def continues(book_id, d: BookDelta) -> bool:
    return True                 # no ids: only the checksum can tell


aligns = KrakenBook.member(continues, "aligns")


def kraken_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    """Kraken book checksum over the best 10 asks then the best 10 bids (unsigned CRC32)."""
    s = "".join(p.replace(".", "").lstrip("0") + v.replace(".", "").lstrip("0") for p, v in asks + bids)
    return zlib.crc32(s.encode())


@KrakenBook.member
def checksum(book: LocalBook) -> int:
    return kraken_checksum(book.top(BID, CHECKSUM_LEVELS), book.top(ASK, CHECKSUM_LEVELS))


# --- websocket -------------------------------------------------------------------------------

@KrakenBook.member
def connect_url(base: str, venue_symbols: list[str], options: Options, session: object = None) -> str:
    return base.rstrip("/") + "/"


def _sub(event: str, pairs: list[str], options: Options, reqid: int | None = None) -> str:
    msg: dict = {"event": event, "pair": pairs, "subscription": {"name": "book", "depth": book_depth(options)}}
    if reqid is not None:
        msg["reqid"] = reqid
    return orjson.dumps(msg).decode()


@KrakenBook.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[Any, str]]:
    # One status per pair, each echoing reqid: the link is subscribed when every pair answered.
    return [((first_id, p), _sub("subscribe", [p], options, first_id + i)) for i, p in enumerate(venue_symbols)]


@KrakenBook.member
def resubscribe_messages(venue_symbol: str, options: Options) -> list[str]:
    return [_sub("unsubscribe", [venue_symbol], options), _sub("subscribe", [venue_symbol], options)]


@KrakenBook.member
def keepalive(options: Options, session: object = None) -> None:
    return None


def _ts_us(levels: list) -> int:
    best = 0
    for lvl in levels:
        try:
            s, _, frac = str(lvl[2]).partition(".")
            best = max(best, int(s) * 1_000_000 + int((frac + "000000")[:6]))
        except (IndexError, ValueError):
            pass
    return best


@KrakenBook.member
class Parser:
    __slots__ = ("symbols", "channels", "first_id")

    def __init__(self, symbols: dict[str, str], options: Options):
        self.symbols = symbols                 # wsname -> canonical
        self.channels: dict[int, str] = {}     # channelID -> canonical (this link only)
        self.first_id = 1

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if isinstance(msg, dict):
            return self._event(msg)
        if not isinstance(msg, list) or len(msg) < 4:
            raise MalformedFrame("frame is neither an event object nor a channel array")
        try:
            cid, pair = msg[0], msg[-1]
            if not str(msg[-2]).startswith("book"):
                return [Ignored(str(msg[-2]))]
            sym = self.channels.get(cid) or self.symbols.get(pair)
            if sym is None:
                return [UnknownSymbol(str(pair))]
            dicts = msg[1:-2]
            if len(dicts) == 1 and ("as" in dicts[0] or "bs" in dicts[0]):
                d = dicts[0]
                asks, bids = d.get("as", []), d.get("bs", [])
                return [BookSnapshot(sym, bids, asks, ts_us=_ts_us(asks + bids), recv_us=recv_us)]
            asks, bids, cs = [], [], None
            for d in dicts:
                asks += d.get("a", [])
                bids += d.get("b", [])
                if "c" in d:
                    cs = int(d["c"])
            if cs is None:
                raise MalformedFrame("book update without checksum")
            return [BookDelta(sym, bids, asks, checksum=cs, ts_us=_ts_us(asks + bids), recv_us=recv_us)]
        except (KeyError, TypeError, ValueError, AttributeError) as ex:
            raise MalformedFrame(f"book message lacks or mistypes field {ex}") from None

    def _event(self, msg: dict) -> list:
        ev = msg.get("event")
        if ev == "subscriptionStatus":
            status, pair = msg.get("status"), msg.get("pair")
            if status == "subscribed":
                sym = self.symbols.get(pair)
                if sym is not None and isinstance(msg.get("channelID"), int):
                    self.channels[msg["channelID"]] = sym
                return [Ack((self.first_id, pair))]
            if status == "unsubscribed":
                self.channels.pop(msg.get("channelID"), None)
                return [Ignored("unsubscribed")]
            return [VenueError(status, str(msg.get("errorMessage", "")), msg.get("reqid"))]
        if ev == "systemStatus":
            if msg.get("status") not in (None, "online"):
                return [Reconnect(f"systemStatus {msg.get('status')}")]
            return [Ignored("systemStatus")]
        if ev in ("heartbeat", "pong"):
            return [Ignored(str(ev))]
        if ev is None:
            raise MalformedFrame("event object without event")
        return [Ignored(str(ev))]
