"""Continuity when a venue's frames lack the sequence field (Gate.io before `id_market`), and when a
venue replays recent trades on subscribe (Bitfinex's snapshot): nothing dropped, nothing counted
twice, and holes that are only spans of time."""

from marketdata.ingest.sequence import SymbolSequence
from marketdata.tick import Tick

S = 1_700_000_000_000_000


def tick(tid: str, ts: int, exchange: str = "gateio") -> Tick:
    return Tick.trade(exchange, "GT-USDT", ts, "0.47", "1.5", "sell", tid, ts + 5)


def gate():
    s = SymbolSequence("gateio", "GT-USDT", "GT_USDT", lateness_us=1000, sequential=True)
    s.on_subscribed()
    return s


def test_a_trade_without_the_sequence_field_is_kept_and_continuity_falls_back_to_time():
    s, gaps = gate(), []
    assert s.accept(tick("100", S), 100, gaps) and s.accept(tick("101", S + 10), 101, gaps)
    assert s.accept_unsequenced(tick("309143071", S + 20), "id_market")
    assert s.fallback == "id_market" and not s.sequential and s.unsequenced == 1
    assert not s.accept_unsequenced(tick("309143071", S + 20), "id_market"), "a repeat is recognised by id"
    assert s.accept_unsequenced(tick("309143072", S + 30), "id_market")
    assert s.holes == [] and gaps == [], "no gap is invented for the change of shape"
    # While subscribed, coverage follows the venue clock as for any venue without ids.
    assert s.advance_coverage(S + 30 + 5 + 10_000)[-1][1] == S + 30 + 10_000 - 1000


def test_a_reconnect_in_fallback_is_a_span_of_time_and_ids_resume_from_the_next_sequenced_trade():
    s, gaps = gate(), []
    s.accept(tick("100", S), 100, gaps)
    s.accept_unsequenced(tick("309143071", S + 20), "id_market")
    s.on_disconnect()
    hole = s.holes[-1]
    assert hole.by_time and hole.before_ts == S + 20 and not hole.closed
    s.on_subscribed()
    # id_market is back: the span closes at this trade, ids continue from it without a jump.
    assert s.accept(tick("500", S + 90), 500, gaps)
    assert s.fallback == "" and s.sequential and hole.closed and hole.after_ts == S + 90
    assert s.accept(tick("501", S + 95), 501, gaps) and len(s.holes) == 1 and gaps == []
    assert s.accept(tick("503", S + 99), 503, gaps)
    assert [(h.lo, h.hi) for h in s.holes[1:]] == [(502, 502)], "id jumps are gaps again"


def test_an_open_id_hole_becomes_a_span_of_time_when_the_field_disappears():
    s, gaps = gate(), []
    s.accept(tick("100", S), 100, gaps)
    s.on_disconnect()
    s.on_subscribed()
    assert not s.holes[-1].by_time
    s.accept_unsequenced(tick("309143080", S + 50), "id_market")
    h = s.holes[-1]
    assert h.by_time and h.closed and (h.before_ts, h.after_ts) == (S, S + 50)


def test_fallback_survives_a_restart():
    s = gate()
    s.accept(tick("100", S), 100, [])
    s.accept_unsequenced(tick("309143071", S + 20), "id_market")
    raw = s.state()
    r = SymbolSequence("gateio", "GT-USDT", "GT_USDT", sequential=True)
    r.restore(raw)
    assert r.fallback == "id_market" and not r.sequential
    assert r.holes[-1].by_time and r.holes[-1].found_by == "restart", "the time away is a span of time, not ids 1.."


def bitfinex():
    s = SymbolSequence("bitfinex", "GT-USDT", "tGTUSD", lateness_us=1000, sequential=False)
    s.on_subscribed()
    return s


def test_a_snapshot_reaching_back_over_our_last_trade_closes_the_reconnect_span_without_rest():
    s, gaps = bitfinex(), []
    for i, ts in ((1, S), (2, S + 10), (3, S + 20)):
        s.accept(tick(str(i), ts, "bitfinex"), 0, gaps)
    s.on_disconnect()
    s.on_subscribed()
    snap = [tick(str(i), S + 10 * (i - 1), "bitfinex") for i in (2, 3, 4, 5)]   # 4, 5 traded while away
    fresh = s.on_replay(snap, gaps)
    assert s.holes == [], "closed from the snapshot"
    assert [g.status for g in gaps] == ["repaired"] and gaps[0].repaired_by == "ws_snapshot" and gaps[0].recovered == 2
    published = [t.trade_id for t in fresh if s.accept(t, 0, [])]
    assert published == ["4", "5"], "known trades are not counted twice"
    assert s.duplicates == 1 + 1      # trade 2 older than the tape, trade 3 a known id


def test_a_snapshot_that_does_not_reach_back_leaves_the_span_for_rest():
    s, gaps = bitfinex(), []
    s.accept(tick("1", S), 0, gaps)
    s.on_disconnect()
    s.on_subscribed()
    fresh = s.on_replay([tick("7", S + 70, "bitfinex"), tick("8", S + 80, "bitfinex")], gaps)
    assert gaps == [] and len(s.holes) == 1
    for t in fresh:
        s.accept(t, 0, gaps)
    h = s.holes[0]
    assert h.closed and (h.before_ts, h.after_ts) == (S, S + 70), "REST repairs from the last trade to the snapshot's first"


def test_a_resubscribe_snapshot_without_a_disconnect_publishes_nothing_twice():
    s, gaps = bitfinex(), []
    for i in range(1, 4):
        s.accept(tick(str(i), S + i, "bitfinex"), 0, gaps)
    fresh = s.on_replay([tick(str(i), S + i, "bitfinex") for i in range(1, 4)], gaps)
    assert [t for t in fresh if s.accept(t, 0, gaps)] == [] and gaps == []
