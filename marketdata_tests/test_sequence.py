"""Trade-id continuity, holes and coverage: the rules that decide what we vouch for."""

from marketdata.ingest.sequence import SymbolSequence
from marketdata.tick import Tick

S = 1_700_000_000_000_000


def tick(i: int, ts: int, source: str = "ws") -> Tick:
    return Tick.trade("binance", "BTC-USDT", ts, "100.0", "1.0", "buy", str(i), ts + 5, source)


def feed(seq, ids_ts, gaps=None):
    gaps = [] if gaps is None else gaps
    return [seq.accept(tick(i, ts), i, gaps) for i, ts in ids_ts], gaps


def new():
    s = SymbolSequence("binance", "BTC-USDT", "BTCUSDT", lateness_us=1000)
    s.on_subscribed()
    return s


def test_in_sequence_coverage_stops_before_last_trade_timestamp():
    s = new()
    feed(s, [(10, S), (11, S + 100), (12, S + 100)])
    assert s.covered_to == S
    # A trade sharing the last timestamp may still come: vouch up to 1 µs before it.
    assert s.advance_coverage(now=S + 150) == [(S + 1, S + 99)]


def test_idle_coverage_follows_the_venue_clock_less_lateness():
    s = new()
    feed(s, [(10, S), (11, S + 100)])
    # 10 ms later, nothing traded: venue time ~ last venue ts + elapsed, less 1 ms lateness.
    spans = s.advance_coverage(now=(S + 100 + 5) + 10_000)
    assert spans == [(S + 1, S + 100 + 10_000 - 1000)]


def test_id_jump_opens_a_hole_and_freezes_coverage_until_repaired():
    s = new()
    _, gaps = feed(s, [(10, S), (11, S + 10), (15, S + 50), (16, S + 60)])
    assert [(g.from_id, g.to_id, g.status) for g in gaps] == [("12", "14", "open")]
    assert s.advance_coverage(now=S + 10**7) == [(S + 1, S + 9)]
    gaps = []
    out = s.apply_repair(s.next_repair(), [tick(12, S + 20, "rest"), tick(13, S + 30, "rest"),
                                           tick(14, S + 40, "rest"), tick(15, S + 50, "rest")], False, gaps)
    assert [t.trade_id for t in out] == ["12", "13", "14"]
    assert [(g.status, g.recovered, g.from_id, g.to_id) for g in gaps] == [("repaired", 3, "12", "14")]
    assert not s.holes
    assert s.advance_coverage(now=S + 61)[0][0] == S + 10


def test_unrepairable_hole_is_skipped_not_filled():
    s = new()
    feed(s, [(10, S), (11, S + 10), (15, S + 50), (16, S + 60)])
    gaps = []
    s.apply_repair(s.next_repair(), [], False, gaps)
    assert [g.status for g in gaps] == ["unrepairable"]
    spans = s.advance_coverage(now=S + 61)
    # Coverage ends before the trade preceding the hole and resumes after the trade following it.
    assert spans[0] == (S + 1, S + 9)
    assert spans[1][0] == S + 51
    assert all(not (f <= S + 30 <= t) for f, t in spans)


def test_reconnect_span_is_a_hole_closed_by_the_next_trade():
    s = new()
    feed(s, [(10, S), (11, S + 10)])
    s.on_disconnect()
    assert s.coverage_bound(now=S + 10**9) == S + 9        # nothing vouched while away
    s.on_subscribed()
    feed(s, [(12, S + 500)])                                # nothing was missed
    assert not s.holes
    s.on_disconnect()
    s.on_subscribed()
    _, gaps = feed(s, [(20, S + 900)])
    assert (s.holes[0].lo, s.holes[0].hi, s.holes[0].found_by) == (13, 19, "reconnect")


def test_catch_up_of_an_open_hole_reaches_the_head():
    s = new()
    feed(s, [(10, S), (11, S + 10)])
    s.on_disconnect()
    s.on_subscribed()
    gaps = []
    out = s.apply_repair(s.next_repair(), [tick(12, S + 20, "rest"), tick(13, S + 30, "rest")], False, gaps)
    assert [t.trade_id for t in out] == ["12", "13"]
    assert not s.holes and s.last_id == 13
    assert [(g.status, g.recovered) for g in gaps] == [("repaired", 2)]
    # A WebSocket trade already fetched over REST is a duplicate, not a new tick.
    published, _ = feed(s, [(13, S + 30), (14, S + 40)])
    assert published == [False, True]


def test_a_catch_up_that_meets_the_link_exactly_records_the_repair():
    # A full REST page ran ahead of the reconnected link (12..13), and the link's first trade is
    # the very next id: the span closes there, and it was repaired, not "nothing missed".
    s = new()
    feed(s, [(10, S), (11, S + 10)])
    s.on_disconnect()
    s.on_subscribed()
    gaps = []
    out = s.apply_repair(s.next_repair(), [tick(12, S + 20, "rest"), tick(13, S + 30, "rest")], True, gaps)
    assert [t.trade_id for t in out] == ["12", "13"] and gaps == [] and s.holes
    published, gaps = feed(s, [(14, S + 40)])
    assert published == [True] and not s.holes
    assert [(g.status, g.repaired_by, g.recovered, g.from_id, g.to_id) for g in gaps] == [
        ("repaired", "rest_by_id", 2, "12", "13")]
    assert s.gaps_repaired == 1 and s.gaps_found == 1


def test_state_round_trip_resumes_with_a_restart_hole():
    s = new()
    feed(s, [(10, S), (11, S + 10), (15, S + 50)])
    s.advance_coverage(now=S + 51)
    raw = {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in s.state().items()}
    r = SymbolSequence("binance", "BTC-USDT", "BTCUSDT")
    r.restore(raw)
    assert r.last_id == 15 and r.covered_to == s.covered_to
    assert [(h.lo, h.hi, h.found_by) for h in r.holes] == [(12, 14, "id_jump"), (16, None, "restart")]


def test_a_link_dropping_while_another_carries_the_symbol_opens_no_hole():
    s = new()                       # link A subscribed
    s.on_subscribed()               # link B (rotation or redundancy)
    feed(s, [(10, S), (11, S + 10)])
    s.on_disconnect()               # A goes; B still live
    assert not s.holes and s.connected
    feed(s, [(12, S + 20)])
    s.on_disconnect()               # B goes too
    assert [(h.lo, h.closed) for h in s.holes] == [(13, False)] and not s.connected


def time_seq():
    s = SymbolSequence("kucoin", "BTC-USDT", "BTC-USDT", lateness_us=1000, sequential=False)
    s.on_subscribed()
    return s


def ttick(tid: str, ts: int, source: str = "ws") -> Tick:
    return Tick.trade("kucoin", "BTC-USDT", ts, "100.0", "1.0", "buy", tid, ts + 5, source)


def test_time_mode_dedupes_by_id_and_turns_a_reconnect_into_a_time_hole():
    s = time_seq()
    assert [s.accept(ttick(t, ts), 0, []) for t, ts in [("a", S), ("b", S + 10), ("a", S)]] == [True, True, False]
    s.on_disconnect()
    assert s.holes[0].by_time and not s.holes[0].closed and s.holes[0].before_ts == S + 10
    s.on_subscribed()
    s.accept(ttick("z", S + 500), 0, [])
    h = s.holes[0]
    assert h.closed and h.after_ts == S + 500
    # Coverage stops before the span until it is repaired.
    assert s.advance_coverage(now=S + 10**9) == [(S + 1, S + 9)]
    gaps = []
    out = s.apply_time_repair(h, [ttick("b", S + 10, "rest"), ttick("c", S + 200, "rest"),
                                  ttick("z", S + 500, "rest")], True, gaps)
    assert [t.trade_id for t in out] == ["c"]
    assert [(g.status, g.recovered, g.from_id) for g in gaps] == [("repaired", 1, "")]
    assert s.advance_coverage(now=S + 501)[0][0] == S + 10


def test_time_mode_hole_the_venue_cannot_cover_is_unrepairable_and_skipped():
    s = time_seq()
    s.accept(ttick("a", S), 0, [])
    s.on_disconnect()
    s.on_subscribed()
    s.accept(ttick("b", S + 1000), 0, [])
    gaps = []
    s.apply_time_repair(s.holes[0], [], False, gaps)
    assert [g.status for g in gaps] == ["unrepairable"]
    spans = s.advance_coverage(now=S + 10**7)     # idle: coverage resumes after the span
    assert spans[-1][0] == S + 1001 and all(not (f <= S + 500 <= t) for f, t in spans)
