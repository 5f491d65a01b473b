"""Coverage holes become recorded gaps, and the gap repair brings them back.

1. Detection on crafted coverage and gap rows in the real ClickHouse: a hole between two covered
   spans is recorded once; a hole a gap row explains, one before the first coverage, after the
   last, older than the horizon or followed by coverage inside the settle window is not; a second
   run records nothing; the SQL agrees with the pure-Python reference on random intervals.
2. End to end: simulator -> connector -> Redis -> persist -> ClickHouse, with a run of a symbol's
   stream entries (ticks and coverage marks) deleted from the real Redis while persist is stopped
   -- what a failover to a lagging replica does. The detection records the hole, ``repair_gaps``
   refetches it from the simulator's REST history (Binance: by time through aggTrades?startTime),
   and ClickHouse then equals the ground truth with the hour covered.
"""

from __future__ import annotations

import random

import orjson

from marketdata.backfill import find_repairable_gaps, record_coverage_holes, repair_gaps
from marketdata.backfill import store as S
from marketdata.backfill.coverage_holes import FOUND_BY, find_coverage_holes, find_holes, uncovered_between
from marketdata.bars.coverage import merged_intervals
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE
from marketdata.config import load_config
from marketdata.gap import Gap
from marketdata.stream import PERSIST_GROUP, stream_key

from .harness import Proc, wait_for
from .pipeline import HOUR, HOUR_END, check_bars, check_ticks, pipeline_factory  # noqa: F401

NOW = HOUR + 5 * US_PER_HOUR
M = US_PER_MINUTE


def _gap(ex, sym, gid, f, t, status="repaired"):
    return Gap(ex, sym, gid, f, t, "", "", "id_jump", status, "", 0, 1, 1, "")


def _gaps(ch):
    return {r[0]: r[1:] for r in ch.rows(
        "SELECT gap_id, exchange, symbol, from_us, to_us, found_by, status FROM marketdata.gaps FINAL")}


def test_detection_records_each_unexplained_hole_once(clickhouse):
    ch = clickhouse
    b = "BTC-USDT"
    start, end = NOW - 2 * US_PER_HOUR, NOW - 10 * M        # the scanned window
    cov = [
        ("binance", b, start - 40 * M, start - 30 * M, "ws"),  # before the horizon ...
        ("binance", b, start - 10 * M, start + 5 * M, "ws"),   # ... so the hole before this is not seen
        ("binance", b, start + 5 * M + 1, start + 20 * M, "ws"),   # touching: no hole
        ("binance", b, start + 10 * M, start + 15 * M, "ws"),      # inside: no hole
        ("binance", b, start + 30 * M, start + 40 * M, "ws"),      # hole A: [start+20m+1, start+30m-1]
        ("binance", b, start + 50 * M, start + 60 * M, "ws"),      # hole B: explained by a gap row
        ("binance", b, start + 61 * M, end - 3 * M, "ws"),         # hole C: 1 minute less 1 µs
        ("binance", b, end + 2 * M, NOW, "ws"),                    # follows a hole inside the settle
        ("binance", "ETH-USDT", start + 1 * M, start + 2 * M, "ws"),   # only one span: nothing between
        ("okx", b, start + 1 * M, start + 2 * M, "ws"),
        ("okx", b, start + 3 * M, start + 4 * M, "ws"),                # hole D: okx cannot repair by time
    ]
    S.write(ch, coverage=cov, gaps=[_gap("binance", b, "g1", start + 45 * M, start + 55 * M)])
    hole_a = (start + 20 * M + 1, start + 30 * M - 1)
    hole_c = (start + 60 * M + 1, start + 61 * M - 1)
    hole_d = (start + 2 * M + 1, start + 3 * M - 1)

    # everything between covered spans, explained or not; then the unexplained ones
    every = {(h.exchange, h.symbol, h.from_us, h.to_us) for h in uncovered_between(ch, start, end)}
    assert every == {("binance", b, *hole_a), ("binance", b, start + 40 * M + 1, start + 50 * M - 1),
                     ("binance", b, *hole_c), ("okx", b, *hole_d)}
    found = find_coverage_holes(ch, now=NOW, horizon_us=2 * US_PER_HOUR, settle_us=10 * M)
    assert [(h.exchange, h.symbol, h.from_us, h.to_us) for h in found] == [
        ("binance", b, *hole_a), ("binance", b, *hole_c), ("okx", b, *hole_d)]
    assert find_coverage_holes(ch, now=NOW, horizon_us=2 * US_PER_HOUR, settle_us=10 * M, exchanges=[]) == []
    assert [h.exchange for h in find_coverage_holes(ch, now=NOW, horizon_us=2 * US_PER_HOUR, exchanges=["okx"])
            ] == ["okx"]

    recs = record_coverage_holes(ch, now=NOW, horizon_us=2 * US_PER_HOUR, settle_us=10 * M)
    assert len(recs) == 3
    gaps = _gaps(ch)
    assert len(gaps) == 4
    got = sorted(g for gid, g in gaps.items() if gid != "g1")
    # Each record reaches to the end of the first mark after the hole (+ 1, within that span):
    # the trades the lost entries held after their last mark lie there.
    assert got == sorted([("binance", b, hole_a[0], start + 40 * M, FOUND_BY, "open"),
                          ("binance", b, hole_c[0], end - 3 * M, FOUND_BY, "open"),
                          ("okx", b, hole_d[0], start + 4 * M, FOUND_BY, "unrepairable")])
    assert {g.gap_id for g in recs} == {f"{FOUND_BY}:{f}:{t}" for f, t in (hole_a, hole_c, hole_d)}
    # A second run records nothing: each hole is explained by its own row now.
    assert record_coverage_holes(ch, now=NOW, horizon_us=2 * US_PER_HOUR, settle_us=10 * M) == []
    assert len(_gaps(ch)) == 4
    # Later, when the settle window has moved past it, the hole before the last span is found too.
    later = record_coverage_holes(ch, now=NOW + 10 * M, horizon_us=2 * US_PER_HOUR, settle_us=10 * M)
    assert [(g.from_us, g.to_us) for g in later] == [(end - 3 * M + 1, NOW + 10 * M - 10 * M - 1)]
    # The gap repair offers the open holes at once (no connector will repair them); okx's is
    # offered as any unrepairable gap is, and the repair skips it saying why.
    due = {g.gap_id for g in find_repairable_gaps(ch, exchanges=["binance", "okx"])}
    assert due == {g.gap_id for g in recs + later}
    assert {g.gap_id for g in find_repairable_gaps(ch, exchanges=["binance"])} == {
        g.gap_id for g in recs + later if g.status == "open"}


def test_detection_sql_agrees_with_the_python_reference(clickhouse):
    rnd = random.Random(7)
    start, end = 1_000_000, 9_000_000
    cov, gaps, want = [], [], {}
    for i in range(6):
        sym = f"S{i}"
        ivs = []
        for _ in range(rnd.randint(1, 40)):
            a = rnd.randint(0, 10_000_000)
            ivs.append((a, a + rnd.choice([0, 1, 50, 5_000, 200_000])))
        gs = []
        for _ in range(rnd.randint(0, 4)):
            a = rnd.randint(0, 10_000_000)
            gs.append((a, a + rnd.randint(0, 100_000)))
        cov += [("binance", sym, a, b, "ws") for a, b in ivs]
        gaps += [_gap("binance", sym, f"g{i}-{j}", a, b) for j, (a, b) in enumerate(gs)]
        want[sym] = find_holes(ivs, gs, start, end)
    S.write(clickhouse, coverage=cov, gaps=gaps)
    got: dict = {sym: [] for sym in want}
    for h in find_coverage_holes(clickhouse, now=end + 1, horizon_us=end + 1 - start, settle_us=1):
        got[h.symbol].append((h.from_us, h.to_us))
    assert got == want
    assert sum(len(v) for v in want.values()) > 10


def _entries_after_delivered(r, key: str) -> list[tuple[bytes, dict]]:
    groups = {(g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g for g in r.xinfo_groups(key)}
    last = groups[PERSIST_GROUP]["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    return [(eid, f) for eid, f in r.xrange(key, min=f"({last}", max="+")]


def _lost_run(entries) -> tuple[list[bytes], int, int, int]:
    """A run of undelivered entries to delete, as a failover loses them: it starts after an entry
    with a coverage mark (covered up to X) and ends with one (covered up to Y); its trades lie
    after X and (those queued after its last mark, at least one: the case a hole bounded by the
    marks alone would miss) up to the end + 1 of the next mark that survives. Returns (ids, X, Y,
    the latest lost trade's ts)."""
    marks = [(i, orjson.loads(f[b"c"])) for i, (_, f) in enumerate(entries) if b"c" in f]
    for (i, before), (j, last), (_, nxt) in zip(marks, marks[4:], marks[5:]):
        run = entries[i + 1:j + 1]
        ts = [t[0] for _, f in run if b"t" in f for t in orjson.loads(f[b"t"])]
        if len(ts) >= 30 and all(before[1] < x <= nxt[1] + 1 for x in ts) and max(ts) > last[1]:
            return [eid for eid, _ in run], before[1], last[1], max(ts)
    raise AssertionError(f"no run of entries whose trades lie inside its marks among {len(entries)} "
                         f"entries, {len(marks)} marks")


def test_entries_lost_after_publish_are_found_and_repaired(pipeline_factory, clickhouse):
    p = pipeline_factory(repair=True, venue="binance")
    sym = "BTC-USDT"
    key = stream_key("binance", sym)
    wait_for(lambda: p.sim_now() >= HOUR + 15 * M, 60, "sim time 10:15")
    p.persist.stop()
    now = p.sim_now()
    wait_for(lambda: p.sim_now() >= now + 6 * M, 60, "6 simulated minutes with persist stopped")
    lost, x, y, latest = _lost_run(_entries_after_delivered(p.r, key))
    assert HOUR < x < y < HOUR_END
    assert latest > y       # a lost trade the next surviving mark vouches for: the record must reach it
    assert p.r.xdel(key, *lost) == len(lost)
    p.persist = Proc("persist-again", ["persist", "--consumer", p.consumer], p.env, p.logs)
    p.wait_hour_persisted()
    p.sim.control("binance", "/_sim/flush", {})
    ch = clickhouse
    # the loss: a span uncovered between covered spans, with no gap row that names it
    assert merged_intervals(ch, HOUR, HOUR_END, [("binance", sym)])[("binance", sym)] == [
        (HOUR, x), (y + 1, HOUR_END - 1)]
    assert not [g for g in _gaps(ch).values() if g[2] <= y and g[3] > x]

    recs = record_coverage_holes(ch, now=HOUR_END + 20 * M, horizon_us=2 * US_PER_HOUR, settle_us=10 * M)
    assert [(g.exchange, g.symbol, g.from_us, g.status) for g in recs] == [("binance", sym, x + 1, "open")]
    assert recs[0].to_us >= max(y, latest)      # reaches over the trades queued after the last lost mark
    assert record_coverage_holes(ch, now=HOUR_END + 20 * M, horizon_us=2 * US_PER_HOUR, settle_us=10 * M) == []

    gaps = find_repairable_gaps(ch, exchanges=["binance"])
    assert [g.gap_id for g in gaps] == [recs[0].gap_id]
    report = repair_gaps(ch, gaps, load_config(p.tmp / "marketdata.yaml").venues)
    (o,) = report.outcomes
    assert (o.result, o.gap.repaired_by) == ("repaired", "rest_by_time"), o.detail
    assert o.recovered >= 30
    assert report.hours == [HOUR]
    assert _gaps(ch)[recs[0].gap_id][5] == "repaired"
    # ClickHouse holds exactly the ground truth, the hour is covered, bars and audit agree.
    got = check_ticks(p, ch)
    assert merged_intervals(ch, HOUR, HOUR_END, [("binance", sym)])[("binance", sym)] == [(HOUR, HOUR_END - 1)]
    check_bars(p, ch, got["truth"])


def test_gap_repair_sensor_records_holes_then_requests_their_repair(clickhouse, tmp_path, monkeypatch):
    import dagster as dg
    from marketdata.clock import now_us
    from marketdata.definitions import defs
    from marketdata.defs.repair import gap_repair
    from marketdata.defs.repair.sensors import HOLE_SCAN_INTERVAL_US

    from .harness import write_config
    cfg = write_config(tmp_path / "marketdata.yaml", {"binance": {
        "symbols": ["BTC-USDT"], "endpoints": "live", "rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:1"}})
    monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", clickhouse.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(cfg))
    now = now_us()
    b = "BTC-USDT"
    S.write(clickhouse, coverage=[("binance", b, now - 60 * M, now - 40 * M, "ws"),
                                  ("binance", b, now - 30 * M, now - 20 * M, "ws")])
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as ctx:
            req = gap_repair(ctx)
            cursor = ctx.cursor
        assert isinstance(req, dg.RunRequest), req
        (gap,) = [g for g in _gaps(clickhouse).items()]
        assert gap[1][:3] == ("binance", b, now - 40 * M + 1) and gap[1][4:] == (FOUND_BY, "open")
        assert req.run_config["ops"]["repair_recorded_gaps"]["config"]["gap_ids"] == [gap[0]]
        assert now <= int(cursor) <= now_us()
        # Within the scan interval the next evaluation does not scan: a new hole waits for the next scan.
        S.write(clickhouse, coverage=[("binance", b, now - 18 * M, now - 15 * M, "ws")])
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs,
                                     cursor=cursor) as ctx:
            again = gap_repair(ctx)
        assert isinstance(again, dg.RunRequest) and again.run_key == req.run_key
        assert len(_gaps(clickhouse)) == 1
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs,
                                     cursor=str(int(cursor) - HOLE_SCAN_INTERVAL_US)) as ctx:
            third = gap_repair(ctx)
        assert len(third.run_config["ops"]["repair_recorded_gaps"]["config"]["gap_ids"]) == 2
        assert len(_gaps(clickhouse)) == 2
