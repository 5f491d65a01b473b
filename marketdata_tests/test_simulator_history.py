"""The simulator's bounded history (``history_s``, `marketdata up`'s default): memory stays
bounded, and what the REST history still holds is exactly right.

Unit level: a ring column keeps absolute indices, bisects land on kept entries, reading a dropped
price fails loudly. Live: all ten venues at speed 30 with a 10-minute ring; once trades were
dropped, every venue's candles (fetched with the connector-side venue modules, as reconciliation
does) equal the ground truth minute by minute inside the ring, and minutes older than the ring
come back empty (no error, no made-up rows); Binance's trade history by id restarts at the ring."""

from __future__ import annotations

import csv
from array import array
from bisect import bisect_left
from collections import defaultdict
from decimal import Decimal

import httpx
import pytest

from marketdata import venues as venue_modules
from marketdata.bars.reconcile import fetch_candles
from marketdata.simulator import Simulator, SimulatorConfig
from marketdata.simulator.generator import BEFORE_RING, RingColumn
from marketdata.supervisor import DEMO_CREDENTIALS

from .simtest import START, START_US

US_MIN = 60_000_000
SYMBOLS = {"binance": ["BTC-USDT", "ETH-USDT"], "okx": ["BTC-USDT"], "kucoin": ["BTC-USDT"],
           "kraken": ["BTC-USD"], "coinbase": ["BTC-USD"], "bybit": ["BTC-USDT"], "bitfinex": ["BTC-USD"],
           "gateio": ["BTC-USDT"], "bitstamp": ["BTC-USD"], "alpaca": ["AAPL-USD"]}


def test_ring_column_keeps_absolute_indices():
    col = RingColumn("q", BEFORE_RING)
    col.extend(range(100, 200))
    prices = RingColumn("q")
    prices.extend(range(100))
    assert col.drop_before(40) == 40 and prices.drop_before(40) == 40
    assert len(col) == 100 and col.base == 40 and array.__len__(col) == 60
    assert col[40] == 140 and col[-1] == 199 and col[39] == BEFORE_RING
    assert list(col[30:45]) == list(range(140, 145))          # a slice holds only kept entries
    assert bisect_left(col, 0) == 40 and bisect_left(col, 150) == 50
    with pytest.raises(IndexError, match="older than the simulator's history ring"):
        prices[39]
    prices[41] += 1000
    assert prices[41] == 1041
    assert col.drop_before(10) == 0                           # already dropped: nothing happens


def _truth_minutes(path) -> dict[tuple[str, str], dict[int, tuple[int, Decimal]]]:
    out: dict = defaultdict(lambda: defaultdict(lambda: [0, Decimal(0)]))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            m = out[(row["exchange"], row["symbol"])][int(row["ts_us"]) // US_MIN * US_MIN]
            m[0] += 1
            m[1] += Decimal(row["qty"])
    return {k: {mu: (c, v) for mu, (c, v) in d.items()} for k, d in out.items()}


def test_bounded_history_serves_exact_candles_inside_the_ring_and_nothing_older(tmp_path, monkeypatch):
    keys, opts = DEMO_CREDENTIALS["alpaca"]
    for k, v in keys.items():
        monkeypatch.setenv(k, v)
    gt = tmp_path / "truth.csv"
    sim = Simulator(SimulatorConfig(
        venues=list(SYMBOLS), symbols=SYMBOLS, start=START, speed=30, rate=600, seed=11,
        ground_truth=gt, history_s=600, venue_options={"alpaca": {"sessions": "always", **opts}})).start()
    try:
        # Wait until every tape dropped its first minutes (the trimmer runs every second of wall time).
        assert sim.wait_for(lambda: sim.sim_now_us() >= START_US + 14 * US_MIN
                            and all(t.first > 0 for v in sim.venues.values() for t in v.tapes), 60), \
            "no trades were dropped"
        # Generation stops, so every minute before the pause is final in the ground truth and on
        # the REST side alike (the ring keeps trimming by simulated time, 6 minutes from the window).
        sim.pause()
        paused_at = sim.sim_now_us()
        sim.flush()
        truth = _truth_minutes(gt)
        for name, v in sim.venues.items():
            mod = venue_modules.get(name)
            with httpx.Client(base_url=sim.endpoints[name]["rest"], timeout=10) as http:
                for sym in SYMBOLS[name]:
                    tape = v.tapes[v.symbol_index(sym)]
                    kept = len(tape) - tape.first
                    assert tape.memory_bytes() <= kept * 8 * 6             # only kept trades use memory
                    ring_start = tape.ts[tape.first] // US_MIN * US_MIN
                    # The ring starts at a whole minute: it holds every trade of its oldest minute.
                    in_oldest = bisect_left(tape.ts, ring_start + US_MIN) - tape.first
                    assert in_oldest == truth[(name, sym)][ring_start][0], (name, sym)
                    assert START_US + 3 * US_MIN <= ring_start, "the first minutes were not dropped"
                    assert ring_start >= sim.sim_now_us() - 12 * US_MIN      # at most the ring + a minute
                    cur = paused_at - paused_at % US_MIN
                    lo, hi = cur - 4 * US_MIN, cur - US_MIN            # well inside the 10-minute ring
                    candles = fetch_candles(mod, http, sym, lo, hi)
                    assert tape.ts[tape.first] // US_MIN * US_MIN <= lo, "the window left the ring meanwhile"
                    want = {mu: x for mu, x in truth[(name, sym)].items() if lo <= mu < hi}
                    assert sorted(candles) == sorted(want), (name, sym)
                    for mu, (count, vol) in want.items():
                        c = candles[mu]
                        assert c.volume == vol, (name, sym, mu)
                        if c.trade_count is not None:
                            assert c.trade_count == count, (name, sym, mu)
                    # The first minutes of the run are gone: nothing is served for them.
                    old = fetch_candles(mod, http, sym, START_US, START_US + 3 * US_MIN)
                    assert old == {}, (name, sym, sorted(old))
        # Trade history by id from before the ring restarts at the ring's first trade, intact.
        b = sim.venues["binance"]
        tape = b.tapes[0]
        with httpx.Client(base_url=sim.endpoints["binance"]["rest"], timeout=10) as http:
            rows = http.get("/api/v3/historicalTrades",
                            params={"symbol": "BTCUSDT", "fromId": tape.spec.first_trade_id, "limit": 50}).json()
            assert rows[0]["id"] >= tape.ids[tape.first] > tape.spec.first_trade_id
            assert [r["id"] for r in rows] == list(range(rows[0]["id"], rows[0]["id"] + 50))
            aggs = http.get("/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": tape.spec.first_order_id,
                                                         "limit": 5}).json()
            assert aggs and aggs[0]["f"] >= tape.ids[tape.first]
            assert aggs[0]["a"] == tape.spec.first_order_id + tape.order_start.base   # ids never shift
    finally:
        sim.stop()
