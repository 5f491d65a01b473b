"""Historical backfill of a venue whose REST pages its history by time (Kraken ``Trades?since``),
against the Kraken simulator's REST over real sockets; and the refusal of venues whose REST
cannot page its history.

One simulator (module scope) generates 09:55..12:10 of 2026-01-05 for BTC-USD and DOGE-USD in a
few wall seconds (speed 3600) and stops trading; its ground truth is the reference. Each test gets
a fresh embedded ClickHouse.

* the library loads 10:00..12:00 window by window (30 min), stops (max_pages), resumes from its
  ClickHouse cursor, and ends with ticks == ground truth, coverage over the range, and complete
  bars equal to bars computed from the ground truth; a second run skips the range;
* a range reaching past our clock stops ``incomplete`` with coverage only up to it;
* ``marketdata backfill`` loads Kraken (exit 0) and refuses Bybit naming why (exit 2), as the
  library does for every venue whose REST keeps only its latest trades.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketdata.backfill import BackfillError, load_history, parse_time_us, read_progress, rebuild_hours, span_hours
from marketdata.bars import audit_hours
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE, now_us

from .harness import SimProc, platform_env, wait_for, write_config
from .pipeline import bars_from_truth, read_truth

H10 = parse_time_us("2026-01-05T10:00Z")
H12 = H10 + 2 * US_PER_HOUR
SIM_END = parse_time_us("2026-01-05T12:10Z")
SYMBOLS = ["BTC-USD", "DOGE-USD"]
WINDOW = 30 * US_PER_MINUTE


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    env = platform_env(tmp, "redis://127.0.0.1:1/0", "http://127.0.0.1:9")
    s = SimProc(["simulate", "--venues", "kraken", "--symbols", ",".join(SYMBOLS), "--rate", "6000",
                 "--seed", "7", "--start", "2026-01-05T09:55:00Z", "--end", "2026-01-05T12:10:00Z",
                 "--speed", "3600", "--ground-truth", str(tmp / "truth.csv")], env, tmp)
    try:
        wait_for(lambda: s.stats("kraken")["sim_time_us"] > SIM_END + 60_000_000, 30, "simulated 12:11")
        s.control("kraken", "/_sim/flush", {})
        s.truth_path = tmp / "truth.csv"
        s.rest_url = s.endpoints["kraken"]["rest"]
        yield s
    finally:
        s.stop()


@pytest.fixture
def store(tmp_path, monkeypatch, sim, clickhouse):
    cfg = write_config(tmp_path / "marketdata.yaml", {"kraken": {
        "symbols": SYMBOLS, "endpoints": "live", "rest_url": sim.rest_url, "ws_url": "ws://127.0.0.1:1"}})
    monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", clickhouse.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(cfg))
    return clickhouse


def stored_ticks(ch, start_us, end_us) -> dict:
    rows = ch.rows("SELECT exchange, symbol, trade_id, ts_us, toString(close), toString(volume), side, source "
                   "FROM marketdata.ticks FINAL WHERE ts_us >= {a:Int64} AND ts_us < {b:Int64}",
                   {"a": start_us, "b": end_us})
    out = {(r[0], r[1], r[2]): (r[3], Decimal(r[4]), Decimal(r[5]), r[6], r[7]) for r in rows}
    assert len(out) == len(rows)
    return out


def merged_coverage(ch, symbol) -> list[tuple[int, int]]:
    spans = sorted(ch.rows("SELECT from_us, to_us FROM marketdata.coverage FINAL WHERE symbol = {s:String}",
                           {"s": symbol}))
    out: list[list[int]] = []
    for f, t in spans:
        if out and f <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], t)
        else:
            out.append([f, t])
    return [tuple(x) for x in out]


def test_time_paged_history_loads_resumes_and_matches_ground_truth(store, sim):
    truth = read_truth(sim.truth_path, H10, H12)
    assert {k[1] for k in truth} == set(SYMBOLS) and all(len(v) > 4000 for v in truth.values())

    first = load_history(store, "kraken", SYMBOLS, H10, H12, rest_url=sim.rest_url, window_us=WINDOW, max_pages=2)
    assert not first.done and all(p.status == "running" for p in first.symbols)
    mid = {s: read_progress(store, "kraken", s, H10, H12) for s in SYMBOLS}
    assert all(H10 < p.loaded_to_us < H12 and p.trades > 0 for p in mid.values())
    loaded_before = sum(p.trades for p in mid.values())

    second = load_history(store, "kraken", SYMBOLS, H10, H12, rest_url=sim.rest_url, window_us=WINDOW)
    assert second.done and all(p.status == "done" and p.pct == 100.0 for p in second.symbols)
    assert second.trades == sum(len(v) for v in truth.values())
    assert second.trades_this_run == second.trades - loaded_before      # resumed, not reloaded
    assert not second.gaps
    assert all(p.pages > (H12 - H10) // WINDOW for p in second.symbols)     # windows of several pages

    got = stored_ticks(store, H10 - US_PER_HOUR, H12 + US_PER_HOUR)
    want = {(ex, sym, tid): (ts, px, qty, side) for (ex, sym), trades in truth.items()
            for tid, ts, px, qty, side in trades}
    assert {k: v[:4] for k, v in got.items()} == want
    assert {v[4] for v in got.values()} == {"backfill"}
    for s in SYMBOLS:
        assert merged_coverage(store, s) == [(H10, H12 - 1)]

    rb = rebuild_hours(store, span_hours(H10, H12), None)
    assert sum(a.stored for a in rb.audits) == sum(a.expected for a in rb.audits) > 0
    rows = store.rows("SELECT exchange, symbol, toUnixTimestamp(minute), open, high, low, close, volume, "
                      "trade_count, complete FROM marketdata.bars_1m FINAL WHERE minute >= {a:DateTime} "
                      "AND minute < {b:DateTime}", {"a": H10 // 1_000_000, "b": H12 // 1_000_000})
    bars = {(r[0], r[1], r[2] * 1_000_000): r[3:] for r in rows}
    expected = bars_from_truth(truth)
    assert set(bars) == set(expected)
    for k, (o, h, lo, c, v, n) in expected.items():
        bo, bh, bl, bc, bv, bn, complete = bars[k]
        assert (Decimal(str(bo)), Decimal(str(bh)), Decimal(str(bl)), Decimal(str(bc)), Decimal(str(bv)), bn) \
            == (o, h, lo, c, v, n), k
        assert complete == 1, k
    audits = audit_hours(store, H10, H12, [("kraken", s) for s in SYMBOLS])
    assert len(audits) == 4 and all(a.passed for a in audits)

    third = load_history(store, "kraken", SYMBOLS, H10, H12, rest_url=sim.rest_url, window_us=WINDOW)
    assert third.skipped == SYMBOLS and third.trades_this_run == 0 and third.rest["requests"] <= 2


def test_a_range_past_our_clock_stops_incomplete(store, sim):
    now = now_us()
    start = now - 10 * US_PER_MINUTE
    res = load_history(store, "kraken", ["BTC-USD"], start, now + US_PER_HOUR, rest_url=sim.rest_url)
    (p,) = res.symbols
    assert p.status == "incomplete" and "run again later" in p.detail
    assert start < p.loaded_to_us <= now
    (cov,) = merged_coverage(store, "BTC-USD")
    assert cov[0] == start and cov[1] == p.loaded_to_us - 1


@pytest.mark.parametrize("venue", ["bybit", "kucoin", "bitstamp", "coinbase", "okx"])
def test_venues_whose_rest_cannot_page_history_are_refused_with_the_reason(store, venue):
    with pytest.raises(BackfillError, match=f"venue {venue} cannot be backfilled from REST: .+"):
        load_history(store, venue, ["BTC-USDT"], H10, H12, rest_url="http://127.0.0.1:9")


def test_cli_backfills_kraken_and_refuses_bybit(store, sim, capsys):
    from marketdata.backfill.cli import main
    start = H10 + 15 * US_PER_MINUTE
    assert main(["--venue", "kraken", "--symbols", "BTC-USD", "--from", "2026-01-05T10:15Z",
                 "--to", "2026-01-05T10:45Z", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "BTC-USD" in out and "done" in out
    truth = read_truth(sim.truth_path, start, start + WINDOW)[("kraken", "BTC-USD")]
    assert len(stored_ticks(store, start, start + WINDOW)) == len(truth) > 0

    assert main(["--venue", "bybit", "--symbols", "BTC-USDT", "--from", "2026-01-05T10:00Z",
                 "--to", "2026-01-05T11:00Z"]) == 2
    err = capsys.readouterr().err
    assert "bybit cannot be backfilled from REST" in err and "last 60 trades" in err and "kraken" in err
