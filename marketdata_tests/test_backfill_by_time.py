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
* Bitfinex, Gate.io, Alpaca and OKX (each paging by time its own way) and Coinbase (by id, its
  first ids searched for) load two hours of their ground truth;
* ``marketdata backfill`` loads Kraken (exit 0) and refuses Bybit naming why (exit 2), as the
  library does for every venue whose REST keeps only its latest trades.
"""

from __future__ import annotations

import pytest

from marketdata import venues
from marketdata.backfill import BackfillError, load_history, read_progress, rebuild_hours, span_hours
from marketdata.clock import format_us, parse_time_us
from marketdata.bars import audit_hours
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE, now_us

from marketdata.rest.client import VenueRest
from marketdata.rest.pager import search_first_id

from .history_sim import history_sim, history_store
from .pipeline import bars_from_truth, read_truth
from .test_backfill import bars, merged_coverage, stored_ticks, truth_ticks

H10 = parse_time_us("2026-01-05T10:00Z")
H12 = H10 + 2 * US_PER_HOUR
SYMBOLS = ["BTC-USD", "DOGE-USD"]
WINDOW = 30 * US_PER_MINUTE


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with history_sim(tmp_path_factory.mktemp("sim"), "kraken", SYMBOLS, rate=6000, seed=7) as s:
        yield s


@pytest.fixture
def store(tmp_path, monkeypatch, sim, clickhouse):
    return history_store(tmp_path, monkeypatch, clickhouse, "kraken", SYMBOLS, sim.rest_url)


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

    assert stored_ticks(store, H10 - US_PER_HOUR, H12 + US_PER_HOUR) == truth_ticks(truth)
    assert store.rows("SELECT DISTINCT source FROM marketdata.ticks FINAL") == [("backfill",)]
    for s in SYMBOLS:
        assert merged_coverage(store, s) == [(H10, H12 - 1)]

    rb = rebuild_hours(store, span_hours(H10, H12), None)
    assert sum(a.stored for a in rb.audits) == sum(a.expected for a in rb.audits) > 0
    got = bars(store, H10, H12)
    assert {k: v[:6] for k, v in got.items()} == bars_from_truth(truth)
    assert {v[6] for v in got.values()} == {1}
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


@pytest.mark.parametrize("venue", ["bybit", "kucoin", "bitstamp"])
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


NYSE = parse_time_us("2026-01-05T14:30Z")        # Alpaca trades only in the session: 09:30 ET


@pytest.mark.parametrize("venue,symbols,start", [("bitfinex", ["BTC-USD", "ETH-USD"], H10),
                                                 ("gateio", ["BTC-USDT", "ETH-USDT"], H10),
                                                 ("alpaca", ["AAPL-USD", "MSFT-USD"], NYSE)])
def test_other_time_paged_venues_load_their_ground_truth(tmp_path_factory, tmp_path, monkeypatch, clickhouse,
                                                         venue, symbols, start):
    """Bitfinex (trades/hist, oldest first, a ms cursor), Gate.io (spot/trades, newest first, a
    seconds cursor walking back) and Alpaca (page tokens) page by time differently; each loads
    two hours of its ground truth."""
    load_two_hours_of_ground_truth(tmp_path_factory, tmp_path, monkeypatch, clickhouse, venue, symbols, start)


def load_two_hours_of_ground_truth(tmp_path_factory, tmp_path, monkeypatch, clickhouse, venue, symbols, start,
                                   during=None):
    end = start + 2 * US_PER_HOUR
    extra: tuple[str, ...] = ()
    if venue == "alpaca":       # its REST wants keys: the simulator's, from the environment
        monkeypatch.setenv("APCA_API_KEY_ID", "PKTEST1234")
        monkeypatch.setenv("APCA_API_SECRET_KEY", "s3cr3t")
        extra = ("--venue-option", "alpaca.key=PKTEST1234", "--venue-option", "alpaca.secret=s3cr3t")
    with history_sim(tmp_path_factory.mktemp(venue), venue, symbols, rate=3000, seed=9, extra=extra,
                     start=format_us(start - 5 * US_PER_MINUTE), end=format_us(end + 10 * US_PER_MINUTE)) as s:
        store = history_store(tmp_path, monkeypatch, clickhouse, venue, symbols, s.rest_url)
        res = load_history(store, venue, symbols, start, end, rest_url=s.rest_url)
        truth = read_truth(s.truth_path, start, end)
        if during is not None:
            during(s)
    assert res.done and not res.gaps and res.trades == sum(len(v) for v in truth.values()) > 1000
    assert stored_ticks(store, start - US_PER_HOUR, end + US_PER_HOUR) == truth_ticks(truth)
    for sym in symbols:
        assert merged_coverage(store, sym) == [(start, end - 1)]
    return res


@pytest.mark.parametrize("venue,symbols", [("okx", ["BTC-USDT", "ETH-USDT"]), ("coinbase", ["BTC-USD", "ETH-USD"])])
def test_okx_by_time_and_coinbase_by_searched_id_load_their_ground_truth(tmp_path_factory, tmp_path, monkeypatch,
                                                                         clickhouse, venue, symbols):
    """OKX walks back by timestamp (history-trades?type=2&after=<ms>, 100 a page; the fills of one
    order share their ms, so page boundaries fall inside a ms and are de-duplicated by id);
    Coinbase pages only by id (trades?after=), so where 10:00 and 12:00 start is searched for
    from its latest trades in a few requests per symbol, then ids are walked forward."""
    during = (lambda s: first_ids_are_found_in_a_few_requests(s, symbols)) if venue == "coinbase" else None
    res = load_two_hours_of_ground_truth(tmp_path_factory, tmp_path, monkeypatch, clickhouse, venue, symbols, H10,
                                         during)
    if venue == "okx":
        assert res.pages > res.trades // 100        # pages of 100 walked back through the range
    else:
        searches = res.rest["requests"] - res.pages - 1           # less the pages and the product list
        assert 0 < searches <= 2 * len(symbols) * 16, res.rest    # the first ids at 10:00 and 12:00


def first_ids_are_found_in_a_few_requests(sim, symbols):
    """Coinbase's first id at a time, searched over its pages by id, is the ground truth's, before
    the tape (its first trade), inside it, at its last trade and past it (None)."""
    mod = venues.get("coinbase")
    options = mod.validate_options(None)
    truth = read_truth(sim.truth_path, 0, 2 ** 62)
    rest = VenueRest("coinbase", sim.rest_url)
    try:
        for sym in symbols:
            rows = sorted((ts, int(tid)) for tid, ts, *_ in truth[("coinbase", sym)])
            for at in (H10 - 2 * US_PER_HOUR, H10, H10 + 1, H10 + 37 * US_PER_MINUTE + 123_456, H12,
                       rows[len(rows) // 3][0], rows[-1][0], rows[-1][0] + 1):
                want = next((tid for ts, tid in rows if ts >= at), None)
                asked = rest.stats.requests
                assert search_first_id(rest.call, mod, sym, at, options) == want, (sym, format_us(at))
                assert rest.stats.requests - asked <= 8, (sym, format_us(at), rest.stats.requests - asked)
    finally:
        rest.close()
