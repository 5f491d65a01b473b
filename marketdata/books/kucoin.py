"""KuCoin book protocol: ``/market/level2:<symbols>`` over a bullet-token WebSocket, plus the
full REST snapshot ``/api/v3/market/orderbook/level2``.

- connect: ``POST /api/v1/bullet-public`` gives a token and an endpoint; connect to
  ``{endpoint}?token=..&connectId=..``, wait for ``welcome``, send a JSON ping every
  ``pingInterval``;
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
import uuid
from typing import Any

import orjson

from ..venues.base import Ack, HttpRequest, Ignored, MalformedFrame, Reconnect, UnknownSymbol, VenueError
from .sync import BookDelta, BookSnapshot

NAME = "kucoin"
SNAPSHOT_FROM = "rest"
DEPTH = None
IDLE_TIMEOUT = 30.0
API_KEY_ENV = "MARKETDATA_KUCOIN_API_KEY"


def _data(body: Any) -> Any:
    if not isinstance(body, dict) or "data" not in body:
        raise MalformedFrame(f"kucoin REST answer lacks data: {str(body)[:200]}")
    if str(body.get("code", "200000")) != "200000":
        raise MalformedFrame(f"kucoin REST error {body.get('code')}: {body.get('msg')}")
    return body["data"]


def instruments_request() -> HttpRequest:
    return HttpRequest("GET", "/api/v2/symbols")


def parse_instruments(body: Any) -> dict[str, str]:
    return {f"{r['baseCurrency']}-{r['quoteCurrency']}": r["symbol"] for r in _data(body)
            if r.get("enableTrading", True)}


def retry_after(status: int, headers: dict) -> float | None:
    if status == 429:
        try:
            return float(headers.get("Retry-After") or 1.0)
        except ValueError:
            return 1.0
    return None


# --- sequencing rule -------------------------------------------------------------------------

def stale(book_id: int, d: BookDelta) -> bool:
    return d.last_id <= book_id


def aligns(book_id: int, d: BookDelta) -> bool:
    return d.first_id <= book_id + 1


continues = aligns


# --- session and websocket -------------------------------------------------------------------

def session_request(options: dict) -> HttpRequest:
    return HttpRequest("POST", "/api/v1/bullet-public")


def parse_session(body: Any) -> dict:
    d = _data(body)
    try:
        server = d["instanceServers"][0]
        return {"token": d["token"], "endpoint": server["endpoint"],
                "ping_s": float(server.get("pingInterval", 18000)) / 1000.0}
    except (KeyError, IndexError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"bullet answer lacks or mistypes field {ex}") from None


def connect_url(base: str, venue_symbols: list[str], options: dict, session: dict | None = None) -> str:
    return f"{session['endpoint']}?token={session['token']}&connectId={uuid.uuid4().hex}"


def subscribe_messages(venue_symbols: list[str], options: dict, first_id: int = 1) -> list[tuple[Any, str]]:
    out = []
    for i in range(0, len(venue_symbols), 100):        # 100 symbols per topic at most
        rid = f"l2-{first_id + len(out)}"
        topic = "/market/level2:" + ",".join(venue_symbols[i:i + 100])
        out.append((rid, orjson.dumps({"id": rid, "type": "subscribe", "topic": topic, "response": True}).decode()))
    return out


def keepalive(options: dict, session: dict | None = None) -> tuple[float, str]:
    interval = float(options.get("ping_interval") or (session or {}).get("ping_s", 18.0))
    return interval / 2, orjson.dumps({"id": "book-ping", "type": "ping"}).decode()


class Parser:
    __slots__ = ("symbols",)

    def __init__(self, symbols: dict[str, str], options: dict):
        self.symbols = symbols

    def parse(self, frame: str | bytes, recv_us: int) -> list:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as e:
            raise MalformedFrame(f"invalid JSON: {e}") from None
        if not isinstance(msg, dict):
            raise MalformedFrame("frame is not a JSON object")
        t = msg.get("type")
        if t == "message":
            if msg.get("subject") != "trade.l2update":
                return [Ignored(str(msg.get("subject")))]
            try:
                d = msg["data"]
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
        if t == "ack":
            return [Ack(msg.get("id"))]
        if t in ("welcome", "pong"):
            return [Ignored(t)]
        if t == "error":
            code = msg.get("code")
            if str(code) == "401":
                return [Reconnect(f"token: {msg.get('data')}")]
            return [VenueError(code, str(msg.get("data", "")), msg.get("id"))]
        if t is None:
            raise MalformedFrame("frame has no type")
        return [Ignored(str(t))]


# --- REST snapshot ---------------------------------------------------------------------------

def snapshot_request(venue_symbol: str, options: dict) -> HttpRequest:
    return HttpRequest("GET", "/api/v3/market/orderbook/level2", {"symbol": venue_symbol})


def snapshot_headers(options: dict) -> dict[str, str]:
    key = os.environ.get(API_KEY_ENV)
    if not key:
        raise RuntimeError(f"kucoin books need the full level2 snapshot, which needs an API key: set "
                           f"{API_KEY_ENV}")
    return {"KC-API-KEY": key}


def parse_snapshot(body: Any, symbol: str, recv_us: int) -> BookSnapshot:
    d = _data(body)
    try:
        return BookSnapshot(symbol, d["bids"], d["asks"], update_id=int(d["sequence"]),
                            ts_us=int(d.get("time", 0)) * 1000 or recv_us, recv_us=recv_us)
    except (KeyError, TypeError, ValueError) as ex:
        raise MalformedFrame(f"level2 snapshot lacks or mistypes field {ex}") from None
