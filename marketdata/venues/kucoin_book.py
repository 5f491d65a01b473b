"""KuCoin book protocol: ``/market/level2:<symbols>`` over a bullet-token WebSocket, plus the
full REST snapshot ``/api/v3/market/orderbook/level2``.

- connect: the bullet-token session of ``marketdata.venues.kucoin`` (token, dynamic endpoint,
  ``welcome`` before subscribing, JSON pings, a stale token's 401 -> Reconnect); the feed
  reconnects with a fresh token before ``token_ttl`` runs out, and after a 401 if it comes first;
- ``trade.l2update`` carries ``sequenceStart``/``sequenceEnd`` and per-change ``[price, size,
  sequence]`` (size ``"0"`` deletes); buffer them, fetch the snapshot (``sequence``), drop
  messages with ``sequenceEnd <= sequence`` and changes whose own sequence is ``<= sequence``;
  a message chains when ``sequenceStart <= book + 1`` (overlap is harmless: per-change sequences
  filter it); a larger ``sequenceStart`` is a gap;
- the full snapshot needs an API key (``KC-API-KEY``), read from ``MARKETDATA_KUCOIN_API_KEY``
  and never logged. No checksum.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from . import kucoin as kucoin_venue
from .base import BookVenue, HttpRequest, Ignored, MalformedFrame, UnknownSymbol
from .book import BookDelta, BookSnapshot
from .kucoin import Options

NAME = "kucoin"
API_KEY_ENV = "MARKETDATA_KUCOIN_API_KEY"


class KucoinBook(BookVenue):
    """KuCoin order books, the book contract filled in (venues/base.py BookVenue)."""

    NAME = NAME
    Options = Options
    IDLE_TIMEOUT = 30.0
    SNAPSHOT_FROM = "rest"


def _data(body: Any) -> Any:
    if not isinstance(body, dict) or "data" not in body:
        raise MalformedFrame(f"kucoin REST answer lacks data: {str(body)[:200]}")
    if str(body.get("code", "200000")) != "200000":
        raise MalformedFrame(f"kucoin REST error {body.get('code')}: {body.get('msg')}")
    return body["data"]


@KucoinBook.member
def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v2/symbols")


@KucoinBook.member
def parse_instruments(body: Any) -> dict[str, str]:
    return {f"{r['baseCurrency']}-{r['quoteCurrency']}": r["symbol"] for r in _data(body)
            if r.get("enableTrading", True)}


# --- sequencing rule -------------------------------------------------------------------------

@KucoinBook.member
def stale(book_id: int, d: BookDelta) -> bool:
    return d.last_id <= book_id


@KucoinBook.member
def aligns(book_id: int, d: BookDelta) -> bool:
    return d.first_id <= book_id + 1


continues = KucoinBook.member(aligns, "continues")


# --- session and websocket -------------------------------------------------------------------
# The bullet-token protocol (session, URL, welcome, keepalive, 401 on a stale token) is the trade
# connector's: one place knows it. Only the level2 subscription and its messages are the book's.

session_request = KucoinBook.member(kucoin_venue.session_request)
parse_session = KucoinBook.member(kucoin_venue.parse_session)
session_ttl = KucoinBook.member(kucoin_venue.session_ttl)
connect_url = KucoinBook.member(kucoin_venue.connect_url)
keepalive = KucoinBook.member(kucoin_venue.keepalive)


@KucoinBook.member
def subscribe_messages(venue_symbols: list[str], options: Options, first_id: int = 1) -> list[tuple[Any, str]]:
    out = []
    for i in range(0, len(venue_symbols), kucoin_venue.MAX_TOPICS_PER_MESSAGE):
        rid = f"l2-{first_id + len(out)}"
        topic = "/market/level2:" + ",".join(venue_symbols[i:i + kucoin_venue.MAX_TOPICS_PER_MESSAGE])
        out.append((rid, orjson.dumps({"id": rid, "type": "subscribe", "topic": topic, "response": True}).decode()))
    return out


@KucoinBook.member
class Parser(kucoin_venue.Parser):
    """The venue's parser (welcome -> ``ready``, acks, pongs, 401 -> Reconnect) reading level2
    updates instead of matches."""

    __slots__ = ()

    def _message(self, msg: dict, recv_us: int) -> list:
        topic, d = msg.get("topic"), msg.get("data")
        if not isinstance(topic, str) or not isinstance(d, dict):
            raise MalformedFrame("message lacks topic or data")
        if not topic.startswith("/market/level2:") or msg.get("subject") != "trade.l2update":
            return [Ignored(str(msg.get("subject")))]
        try:
            vs = d["symbol"]
            sym = self.symbols.get(vs)
            if sym is None:
                return [UnknownSymbol(vs)]
            ch = d["changes"]
            first, last = d["sequenceStart"], d["sequenceEnd"]
            if not (isinstance(first, int) and isinstance(last, int)):
                raise TypeError("sequenceStart/End")
            return [BookDelta(sym, ch["bids"], ch["asks"], first_id=first, last_id=last,
                              ts_us=int(d.get("time", 0)) * 1000, recv_us=recv_us, per_level_seq=True)]
        except (KeyError, TypeError, ValueError) as ex:
            raise MalformedFrame(f"l2update lacks or mistypes field {ex}") from None


# --- REST snapshot ---------------------------------------------------------------------------

@KucoinBook.member
def snapshot_request(venue_symbol: str, options: Options) -> HttpRequest:
    return HttpRequest("GET", "/api/v3/market/orderbook/level2", {"symbol": venue_symbol})


@KucoinBook.member
def snapshot_headers(options: Options) -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise RuntimeError(f"kucoin books need the full level2 snapshot, which needs an API key: set "
                           f"{API_KEY_ENV}")
    return {"KC-API-KEY": key}


@KucoinBook.member
def parse_snapshot(body: Any, symbol: str, recv_us: int) -> BookSnapshot:
    d = _data(body)
    try:
        return BookSnapshot(symbol, d["bids"], d["asks"], update_id=int(d["sequence"]),
                            ts_us=int(d.get("time", 0)) * 1000 or recv_us, recv_us=recv_us)
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"level2 snapshot lacks or mistypes field {ex}") from None
