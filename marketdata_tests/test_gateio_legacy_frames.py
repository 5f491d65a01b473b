"""Gate.io pushes recorded before 2025-01-08 carry no `id_market`. Through the real connector, a real
socket and a real Redis: every such trade is published (none is counted malformed), continuity
falls back to time -- logged and shown in health --, a reconnect in that state is repaired from
REST by time, and when `id_market` comes back id continuity resumes.

The venue here is a small replay server speaking the old wire shape (the simulator speaks the
current one); its frames follow the documented 2020 notification, as in the corpus."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import WSMsgType, web

from marketdata.clock import now_us
from marketdata.config import VenueConfig
from marketdata.ingest.connector import VenueConnector
from marketdata.ingest.health import HealthBounds, evaluate_venue
from marketdata.storage.redis import client
from marketdata.stream import decode_entry, stream_key


def _ms_text(ts_us: int) -> str:
    return f"{ts_us // 1000}.{ts_us % 1000:03d}0"


class LegacyGate:
    """GT_USDT only. Trades are (platform id, ts_us, id_market or None); REST serves them by time."""

    def __init__(self) -> None:
        self.trades: list[tuple[int, int, int | None]] = []
        self.ws: web.WebSocketResponse | None = None
        self.subscribed = asyncio.Event()
        self.rest_by_time = 0

    def push_frame(self, pid: int, ts: int, market: int | None) -> str:
        r = {"id": pid, "create_time": ts // 1_000_000, "create_time_ms": _ms_text(ts), "side": "buy",
             "currency_pair": "GT_USDT", "amount": "1.5", "price": "0.4705"}
        if market is not None:
            r["id_market"] = market
        return orjson.dumps({"time": ts // 1_000_000, "channel": "spot.trades", "event": "update", "result": r}).decode()

    async def trade(self, pid: int, market: int | None = None, *, live: bool = True) -> None:
        ts = now_us()
        self.trades.append((pid, ts, market))
        if live:
            await self.ws.send_str(self.push_frame(pid, ts, market))

    async def _ws(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            m = orjson.loads(msg.data)
            if m.get("channel") == "spot.ping":
                await ws.send_str('{"time":%d,"channel":"spot.pong","event":"","error":null,"result":null}' % m["time"])
            elif m.get("event") == "subscribe":
                await ws.send_str(orjson.dumps({"time": m["time"], "id": m["id"], "channel": "spot.trades",
                                                "event": "subscribe", "error": None,
                                                "result": {"status": "success"}}).decode())
                self.subscribed.set()
        return ws

    async def _pairs(self, request):
        return web.json_response([{"id": "GT_USDT", "base": "GT", "quote": "USDT", "trade_status": "tradable"}])

    async def _trades(self, request):
        q = request.query
        assert q["currency_pair"] == "GT_USDT" and "last_id" not in q, "a span of time is repaired by time"
        self.rest_by_time += 1
        lo, hi = int(q["from"]) * 1_000_000, (int(q["to"]) + 1) * 1_000_000 if "to" in q else 1 << 62
        rows = [{"id": str(pid), "create_time": str(ts // 1_000_000), "create_time_ms": _ms_text(ts),
                 "currency_pair": "GT_USDT", "side": "buy", "amount": "1.5", "price": "0.4705",
                 **({"sequence_id": str(m)} if m is not None else {})}
                for pid, ts, m in self.trades if lo <= ts < hi]
        return web.json_response(rows[::-1][: int(q["limit"])])

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/ws/v4/", self._ws)
        app.router.add_get("/api/v4/spot/currency_pairs", self._pairs)
        app.router.add_get("/api/v4/spot/trades", self._trades)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def _until(cond, what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def test_trades_without_id_market_are_all_kept_and_repaired_by_time(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="marketdata.ingest")
    venue = LegacyGate()
    seen_health = {}

    async def run() -> VenueConnector:
        base = await venue.start()
        cfg = VenueConfig("gateio", ["GT-USDT"], base.replace("http", "ws"), base, idle_timeout=10)
        conn = VenueConnector(cfg, redis_server.url, coverage_interval=0.05, flush_ms=2)
        stop = asyncio.Event()
        task = asyncio.create_task(conn.run(stop))
        try:
            await asyncio.wait_for(venue.subscribed.wait(), 20)
            await _until(lambda: conn.seqs["GT-USDT"].connected, "subscribed")
            for pid in range(1001, 1006):
                await venue.trade(pid)
            await _until(lambda: conn.ticks_in == 5, "five legacy trades")
            seen_health.update({k: str(v) for k, v in conn.health().items()})

            # The link drops; three trades happen while we are away; the next push ends the span.
            venue.subscribed.clear()
            await venue.ws.close()
            for pid in range(1006, 1009):
                await venue.trade(pid, live=False)
            await asyncio.wait_for(venue.subscribed.wait(), 20)
            await _until(lambda: conn.seqs["GT-USDT"].connected, "resubscribed")
            await venue.trade(1009)
            await _until(lambda: conn.seqs["GT-USDT"].gaps_repaired == 1, "the span repaired from REST")

            # id_market is back: id continuity resumes from it.
            await venue.trade(1010, 500)
            await venue.trade(1011, 501)
            await _until(lambda: conn.ticks_in == 8, "sequenced trades")
            await _until(lambda: conn.publisher.queued == 0, "published")
            return conn
        finally:
            stop.set()
            await task
            await venue.runner.cleanup()

    conn = asyncio.run(asyncio.wait_for(run(), 90))

    assert conn.malformed == 0, "no trade was dropped as malformed"
    assert seen_health["unsequenced"] == "5" and seen_health["sequence_fallback"] == "GT-USDT:id_market"
    verdict = evaluate_venue("gateio", seen_health, now_us(), HealthBounds())
    assert verdict.healthy and verdict.sequence_fallback == ["GT-USDT:id_market"]
    assert any("continuity by time" in w for w in verdict.warnings), verdict.warnings
    assert "trades arrive without id_market; continuity falls back to time" in caplog.text
    assert "trade ids are back" in caplog.text

    seq = conn.seqs["GT-USDT"]
    assert seq.fallback == "" and seq.sequential and seq.last_id == 501
    assert venue.rest_by_time >= 1

    r = client(redis_server.url)
    ids, gaps = [], []
    for _, fields in r.xrange(stream_key("gateio", "GT-USDT")):
        e = decode_entry(fields)
        ids += [t.trade_id for t in e.ticks]
        gaps += e.gaps
    r.close()
    expected = [str(p) for p in range(1001, 1010)] + ["500", "501"]
    assert sorted(ids) == sorted(expected), "every trade exactly once: live, repaired, and after the change back"
    repaired = [g for g in gaps if g.status == "repaired"]
    assert [(g.found_by, g.repaired_by, g.recovered) for g in repaired] == [("reconnect", "rest_by_time", 3)]
