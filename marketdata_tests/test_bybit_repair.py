"""Bybit's REST repair rule against the simulator's real `recent-trade` endpoint: a reconnect span is
repaired when the last 60 trades reach back past its start, and otherwise recorded unrepairable
from the last trade we had to the oldest trade the venue still gives (its minutes stay incomplete),
keeping what the page did return."""

from __future__ import annotations

import httpx
import orjson
import pytest

from marketdata.ingest.sequence import SymbolSequence
from marketdata.tick import Tick
from marketdata.venues import bybit

from .simtest import SimFactory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tape(tmp_path):
    f = SimFactory(tmp_path, "bybit", ["BTC-USDT"])
    sim = f(rate=1500, seed=9)
    try:
        assert sim.wait_generated(3000, "bybit")
        sim.pause("bybit")
        req = bybit.history_by_time_request("BTCUSDT", 0, None, {})
        body = orjson.loads(httpx.get(sim.endpoints["bybit"]["rest"] + req.path, params=req.params, timeout=10).content)
        yield sim.trades("bybit", "BTC-USDT"), body
    finally:
        f.close()


def _seen_until(trades: list[dict], k: int) -> tuple[SymbolSequence, list]:
    """A tracker that received trades [0, k) on a link that then dropped and came back."""
    seq = SymbolSequence("bybit", "BTC-USDT", "BTCUSDT", sequential=False)
    seq.on_subscribed()
    for t in trades[:k]:
        assert seq.accept(Tick.trade("bybit", "BTC-USDT", t["ts_us"], t["price"], t["qty"], t["side"],
                                     t["trade_id"], t["ts_us"]), 0, [])
    seq.on_disconnect()
    seq.on_subscribed()
    (hole,) = seq.holes
    return seq, hole


def _repair(seq: SymbolSequence, hole, body) -> tuple[list[Tick], list]:
    ticks, cursor, complete = bybit.parse_history_page(body, "BTC-USDT", 0, {}, hole.before_ts, hole.after_ts)
    assert cursor is None
    gaps: list = []
    return seq.apply_time_repair(hole, ticks, complete, gaps), gaps


def test_short_span_is_repaired_from_the_last_60(tape):
    trades, body = tape
    n = len(trades)
    seq, hole = _seen_until(trades, n - 30)
    out, gaps = _repair(seq, hole, body)
    assert [t.trade_id for t in out] == [t["trade_id"] for t in trades[n - 30:]]
    assert [g.status for g in gaps] == ["repaired"] and not seq.holes


def test_long_span_is_unrepairable_from_last_trade_to_oldest_returned(tape):
    trades, body = tape
    n = len(trades)
    k = n - 500
    seq, hole = _seen_until(trades, k)
    out, gaps = _repair(seq, hole, body)
    # what the page gives is kept; the span before it is recorded lost, never vouched for
    assert [t.trade_id for t in out] == [t["trade_id"] for t in trades[n - 60:]]
    (gap,) = gaps
    assert gap.status == "unrepairable"
    assert (gap.from_us, gap.to_us) == (trades[k - 1]["ts_us"], trades[n - 60]["ts_us"])
    spans = seq.advance_coverage(trades[-1]["ts_us"])
    assert len(spans) == 2 and spans[0][1] < trades[k - 1]["ts_us"] and spans[1][0] > gap.to_us
