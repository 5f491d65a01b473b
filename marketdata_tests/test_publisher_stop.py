"""A connector asked to stop must stop: its publisher flushes what it holds to a live Redis, and
gives up after a bounded wait (reporting what it abandoned) when Redis is down, instead of
retrying forever. Real redis-server; the publisher is the one the connectors run."""

from __future__ import annotations

import asyncio

from marketdata.ingest.publisher import Publisher
from marketdata.storage.redis import async_client
from marketdata.stream import stream_key
from marketdata.tick import Tick


def _ticks(n: int) -> list[Tick]:
    return [Tick.trade("binance", "BTC-USDT", 1_700_000_000_000_000 + i, "100", "1", "buy", str(i + 1),
                       1_700_000_000_000_000 + i) for i in range(n)]


async def _publish_then_stop(url: str, ticks: list[Tick], *, before_stop=None, drain_s: float = 10.0):
    r = async_client(url)
    pub = Publisher(r, flush_ms=1000.0)          # nothing flushes on its own before the stop
    pub.drain_s = drain_s
    stop = asyncio.Event()
    task = asyncio.create_task(pub.run(stop))
    for t in ticks:
        await pub.put(t)
    if before_stop is not None:
        before_stop()
    stop.set()
    pub.request_flush()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(task, timeout=drain_s + 30)
    took = loop.time() - t0
    await r.aclose()
    return pub, took


def test_a_stop_flushes_everything_to_a_live_redis(redis_server, redis_client):
    pub, _ = asyncio.run(_publish_then_stop(redis_server.url, _ticks(250)))
    assert pub.abandoned == 0 and pub.queued == 0
    assert redis_client.xlen(stream_key("binance", "BTC-USDT")) >= 1


def test_a_stop_with_redis_down_gives_up_after_the_drain_and_says_what_it_abandoned(redis_server, caplog):
    pub, took = asyncio.run(_publish_then_stop(redis_server.url, _ticks(250), before_stop=redis_server.stop,
                                               drain_s=2.0))
    assert pub.abandoned == 250
    assert took >= 2.0                          # it did wait for Redis first
    assert any("250 ticks not published" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
