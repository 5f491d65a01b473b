"""KuCoin end to end, as real processes: simulator -> `marketdata ingest` -> Redis -> `marketdata
persist` -> ClickHouse -> bars_1m, the completeness audit and the Dagster check.

KuCoin's traps: bullet tokens that expire (a few wall seconds here) and must be rotated
make-before-break without losing or duplicating a trade; a JSON ping the server wants every
pingInterval (short here), or it drops the link; trade ids that jump, so a missed span is only
known from a reconnect; and REST that returns only the last 100 trades, so a long reconnect gap is
recorded unrepairable while a short one is repaired.
"""

from __future__ import annotations

import io
from collections import Counter

import orjson
import pytest

from marketdata import tools
from marketdata.bars.reconcile import reconcile
from marketdata.config import VenueConfig
from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import HOUR, check_bars, check_dagster, check_ticks, pipeline_factory  # noqa: F401

pytestmark = pytest.mark.timeout(240)

# The server drops a link that sends no JSON ping for pingInterval + pingTimeout (1.6 s here, less
# than the connector's 2.5 s idle timeout, so only our pings keep the link up).
PINGS = ["--venue-option", "kucoin.ping_interval_ms=800", "--venue-option", "kucoin.ping_timeout_ms=800"]
# Tokens live 4 wall seconds at the simulator; we trust them 3 s and rotate at 80 % of that.
TOKENS = ["--venue-option", "kucoin.token_ttl=4"]


def _sim_stats(p) -> dict:
    return p.sim.stats("kucoin")["kucoin"]


def test_token_rotations_lose_and_duplicate_nothing(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(venue="kucoin", sim_args=PINGS + TOKENS, options={"token_ttl": 3})
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    faults = [p.inject(kind="malformed", count=3), p.inject(kind="unknown_symbol")]
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert all(HOUR <= f["sim_time_us"] for f in faults)
    p.wait_hour_persisted()
    p.sim.control("kucoin", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()

    # Only rotations: no token ever expired under a live link, no ping timeout, no reconnect.
    assert p.health("rotations") >= 8, p.ingest.log(200)
    assert p.health("reconnects") == 0, p.ingest.log(200)
    assert p.health("duplicates") > 0, "overlapping links must have delivered (and dropped) duplicates"
    st = _sim_stats(p)
    assert st["ping_drops"] == 0 and st["tokens_issued"] >= 9, st

    got = check_ticks(p, clickhouse)
    assert not got["gaps"], got["gaps"]
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)
    # The venue's own 1-minute candles (O,C,H,L order, seconds, no trade count) agree with the bars.
    eps = p.sim.endpoints["kucoin"]
    rec = reconcile(clickhouse, HOUR, HOUR + 60 * US_PER_MINUTE,
                    {"kucoin": VenueConfig("kucoin", p.symbols, eps["ws"], eps["rest"])})
    assert rec.passed and rec.compared == 60 * len(p.symbols), rec.mismatches_by_pair()


def test_long_reconnect_gap_is_unrepairable_from_the_last_100(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(venue="kucoin", sim_args=PINGS, options={}, rate=2000)
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 10 * US_PER_MINUTE, 60, "sim time 10:10")
    # A silent drop is seen after the 2.5 s idle timeout: ~2500 trades a symbol, far past the last 100.
    p.inject(kind="silent_drop")
    p.wait_health("reconnects", 1)
    p.wait_health("gaps_unrepairable", 2)
    wait_for(lambda: p.sim_now() >= HOUR + 30 * US_PER_MINUTE, 60, "sim time 10:30")
    p.inject(kind="close")
    p.wait_health("reconnects", 2)
    p.wait_health("gaps_unrepairable", 4)
    p.wait_hour_persisted()
    p.sim.control("kucoin", "/_sim/flush", {})

    got = check_ticks(p, clickhouse, allow_unrepairable=True)
    assert got["missing"], "trades were lost across the reconnects"
    bad = [g for g in got["gaps"] if g[2] == "unrepairable"]
    assert {g[1] for g in bad} == {"reconnect"}
    assert Counter(g[0] for g in bad) == {s: 2 for s in p.symbols}, got["gaps"]
    assert all(HOUR <= g[3] < g[4] < HOUR + 60 * US_PER_MINUTE for g in bad), bad
    audits = check_bars(p, clickhouse, got["truth"], expect_complete=False)
    assert not all(a.passed for a in audits)
    check_dagster(p, monkeypatch, expect_pass=False)


def test_short_reconnect_gap_is_repaired_from_the_last_100(pipeline_factory, clickhouse):
    # 30 trades a wall second per symbol: a close and reconnect (<= 0.5 s backoff) misses far fewer
    # than the 100 trades histories returns.
    p = pipeline_factory(venue="kucoin", sim_args=PINGS, options={}, rate=60)
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 10 * US_PER_MINUTE, 60, "sim time 10:10")
    p.inject(kind="close")
    p.wait_health("reconnects", 1)
    p.wait_health("gaps_repaired", 2)
    p.wait_hour_persisted()
    p.sim.control("kucoin", "/_sim/flush", {})

    got = check_ticks(p, clickhouse, min_trades=1000)
    fixed = [g for g in got["gaps"] if g[2] == "repaired"]
    assert {g[1] for g in fixed} == {"reconnect"} and {g[0] for g in fixed} == set(p.symbols), got["gaps"]
    check_bars(p, clickhouse, got["truth"])


# --- parser, with frames as the reference shows them ---------------------------------------------

REFERENCE_FRAMES = [
    '{"id":"hQvf8jkno","type":"welcome"}',
    '{"id":"1545910660739","type":"ack"}',
    '{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"makerOrderId":'
    '"6717a9d3c6a8f70007e1c2b1","price":"67523","sequence":"11067996711960577","side":"buy","size":"0.003",'
    '"symbol":"BTC-USDT","takerOrderId":"6717a9d4b4a9e10007bca0f0","time":"1729843222921000000",'
    '"tradeId":"11067996711960577","type":"match"}}',
    '{"type":"message","topic":"/market/match:ETH-USDT","subject":"trade.l3match","data":{"makerOrderId":'
    '"5c24c5da03aa673885cd67aa","price":"0.08200000000000000000","sequence":"1545896669145","side":"sell",'
    '"size":"0.01022222000000000000","symbol":"ETH-USDT","takerOrderId":"5c24c5d903aa6772d55b371e",'
    '"time":"1545913818099033203","tradeId":"5c24c5da03aa673885cd67aa","type":"match"}}',
    '{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"symbol":"BTC-USDT",'
    '"time":"1729843222921000000","type":"match"}}',
    '{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":{"price":',
    '{"type":"message","topic":"/market/match:XRP-USDT","subject":"trade.l3match","data":{"price":"0.5",'
    '"sequence":"7","side":"buy","size":"10","symbol":"XRP-USDT","time":"1729843222921000000","tradeId":"7"}}',
    '{"id":"1551623050668","type":"error","code":404,"data":"topic /market/level2:BSV-BTC is not found"}',
    '{"id":"p1","type":"pong"}',
]


def test_parser_reads_reference_frames():
    out, err = io.StringIO(), io.StringIO()
    counts = tools.decode("kucoin", ["BTC-USDT", "ETH-USDT"], io.StringIO("\n".join(REFERENCE_FRAMES)), out, err)
    assert counts == {"frames": 9, "ticks": 2, "malformed": 2, "unrecognised": 0, "unknown_symbol": 1,
                      "unsequenced": 0, "other": 4}, err.getvalue()
    btc, eth = [orjson.loads(line) for line in out.getvalue().splitlines()]
    # ns -> µs; side is the taker's; the id is the sequence (or the old ObjectId) as text.
    assert (btc["ts_us"], btc["close"], btc["volume"], btc["side"], btc["trade_id"]) == \
        (1729843222921000, "67523", "0.003", "buy", "11067996711960577")
    assert (eth["ts_us"], eth["close"], eth["side"], eth["trade_id"]) == \
        (1545913818099033, "0.08200000000000000000", "sell", "5c24c5da03aa673885cd67aa")


def test_parser_needs_the_welcome_and_turns_401_into_a_reconnect():
    from marketdata.venues import kucoin
    from marketdata.venues.base import Reconnect, VenueError
    parser = kucoin.Parser({"BTC-USDT": "BTC-USDT"}, {})
    assert not parser.ready
    parser.parse('{"id":"c1","type":"welcome"}', 0)
    assert parser.ready
    (ev,) = parser.parse('{"type":"error","code":401,"data":"token is expired"}', 0)
    assert type(ev) is Reconnect and "expired" in ev.reason
    (ev,) = parser.parse('{"id":"9","type":"error","code":509,"data":"exceed max subscription count"}', 0)
    assert type(ev) is VenueError and ev.request_id == "9"


# --- the last 100: complete only when they reach back past the hole -------------------------------

def _histories(first_ns: int, n: int = 100) -> dict:
    return {"code": "200000", "data": [{"sequence": str(1000 + 7 * i), "price": "0.07", "size": "0.004",
                                        "side": "buy", "time": first_ns + i * 1_000_000} for i in range(n)]}


def test_history_page_is_complete_only_when_it_reaches_back_past_the_hole():
    from marketdata.venues import kucoin
    body = _histories(1_000_000_000_000)            # 100 trades at 1_000_000_000 µs + i ms
    oldest = 1_000_000_000
    ticks, cursor, complete = kucoin.parse_history_page(body, "BTC-USDT", 0, {}, oldest + 1, None)
    assert complete and cursor is None and len(ticks) == 99 and ticks[0].source == "rest"
    assert (ticks[0].ts_us, ticks[0].trade_id) == (oldest + 1000, "1007")
    # A trade at the hole's start itself could have had unseen siblings in the same µs.
    assert not kucoin.parse_history_page(body, "BTC-USDT", 0, {}, oldest, None)[2]
    assert not kucoin.parse_history_page(body, "BTC-USDT", 0, {}, oldest - 1, None)[2]
    # Fewer than a page: that is the venue's whole tape.
    assert kucoin.parse_history_page(_histories(10**15, 5), "BTC-USDT", 0, {}, 1, None)[2]


def test_open_hole_beyond_the_last_100_is_recorded_unrepairable_from_its_start():
    from marketdata.ingest.sequence import SymbolSequence
    from marketdata.tick import Tick
    from marketdata.venues import kucoin
    seq = SymbolSequence("kucoin", "BTC-USDT", "BTC-USDT", sequential=False)
    seq.on_subscribed()
    seq.accept(Tick("kucoin", "BTC-USDT", 500, "1", "1", "1", "1", "1", 1, "buy", "1", 0), 0, [])
    seq.on_disconnect()
    seq.on_subscribed()
    (hole,) = seq.holes
    assert not hole.closed
    # The reconnect took long: the last 100 start well after the last trade we had (500 µs).
    ticks, _, complete = kucoin.parse_history_page(_histories(2_000_000), "BTC-USDT", 0, {}, hole.before_ts, None)
    gaps: list = []
    out = seq.apply_time_repair(hole, ticks, complete, gaps)
    assert len(out) == 100
    (gap,) = gaps
    assert (gap.status, gap.from_us, gap.to_us) == ("unrepairable", 500, 2000)
    # Coverage skips exactly that span and goes on after it.
    seq.covered_to = 499
    seq.advance_coverage(10**9)
    assert not seq.holes and seq.covered_to >= 2000
