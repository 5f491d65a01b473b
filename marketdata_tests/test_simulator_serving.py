"""How the simulator serves for little CPU: order books that nothing reads stay behind the tape and
are caught up, identical, where they are read; every venue serves its trade subscription to the
raw drain client of ``marketdata.bench.simulator_serve`` (the tool that measures the simulator's CPU per trade)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from marketdata.simulator.book import ASK, BID, OrderBook

from .simtest import SimFactory, recv_json, ws_connect

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def binance(tmp_path):
    f = SimFactory(tmp_path, "binance", ["BTC-USDT", "ETH-USDT"])
    yield f
    f.close()


def _replay(v, si: int) -> OrderBook:
    """The book of symbol ``si`` rebuilt from the venue's tape in small steps (what advancing it at
    every generation step gives)."""
    book = OrderBook(v.specs[si], f"{v.config.seed}:{v.name}", 400, 0.85, v.sim.clock.start_us)
    tape = v.tapes[si]
    n = len(tape.order_start)
    o = 0
    while o < n:
        step = min(n, o + 1 + o % 7)
        book.apply_orders(tape, o, step)
        o = step
    return book


def test_books_nobody_reads_stay_behind_and_catch_up_identically(binance):
    sim = binance(rate=20000, speed=1)
    assert sim.wait_generated(20000, venue="binance", timeout=30)
    sim.pause()
    v = sim.venue("binance")
    behind = [len(t.order_start) - b.orders_applied for t, b in zip(v.tapes, v.books)]
    assert all(k > 1000 for k in behind), behind      # no subscriber, no REST depth: not advanced
    base = sim.endpoints["binance"]["rest"]
    view = httpx.get(base + "/_sim/book", params={"symbol": "BTC-USDT"}).json()
    assert [b.orders_applied for b in v.books] == [len(t.order_start) for t in v.tapes]
    for si in range(2):
        ref = _replay(v, si)
        assert v.books[si].update_id == ref.update_id
        assert v.books[si].top(BID) == ref.top(BID) and v.books[si].top(ASK) == ref.top(ASK)
        assert list(v.books[si].trade_seq) == list(ref.trade_seq)
    assert view["update_id"] == v.books[0].update_id
    depth = httpx.get(base + "/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5}).json()
    assert depth["lastUpdateId"] == v.books[1].update_id


def test_a_depth_subscriber_keeps_books_current(binance):
    sim = binance(rate=5000, speed=1)
    ws_url = sim.endpoints["binance"]["ws"]
    v = sim.venue("binance")

    async def run() -> None:
        async with ws_connect(ws_url + "/ws") as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}))
            assert (await recv_json(ws))["id"] == 1
            event = await recv_json(ws)
            assert event["e"] == "depthUpdate"
            start = sim.generated("binance")
            assert await asyncio.to_thread(sim.wait_generated, start + 2000, "binance")
            await asyncio.to_thread(sim.pause)

    asyncio.run(run())
    lag = [len(t.order_start) - b.orders_applied for t, b in zip(v.tapes, v.books)]
    assert lag == [0, 0]                    # advanced with every generation step


def test_servecheck_drains_every_venue(tmp_path):
    out = subprocess.run([sys.executable, "-m", "marketdata.bench.simulator_serve", "--rate", "3000",
                          "--seconds", "2", "--workdir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=80)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["venues"]) == 10
    assert report["closed_connections"] == {}
    for venue, counts in report["per_venue"].items():
        assert counts["generated"] > 0, venue
        assert counts["sent"] == counts["generated"], (venue, counts)
    assert report["simulator_cpu_us_per_trade"] > 0
    assert (tmp_path / "ground_truth.csv").stat().st_size > 0



def test_with_a_bounded_history_books_stay_current(binance):
    # the ring drops trades a lazy book would still have to read: the books advance every step
    sim = binance(rate=5000, speed=1, history_s=600)
    assert sim.wait_generated(3000, venue="binance", timeout=30)
    sim.pause()
    v = sim.venue("binance")
    assert [len(t.order_start) - b.orders_applied for t, b in zip(v.tapes, v.books)] == [0, 0]
