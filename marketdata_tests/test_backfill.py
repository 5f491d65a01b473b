"""Historical backfill and gap repair against the Binance simulator's REST history.

One simulator (module scope) generates 09:55..12:10 of 2026-01-05 for BTC-USDT and ETH-USDT in a
few wall seconds (speed 3600) and then stops trading; its ground truth is the reference. Each test
gets a fresh embedded ClickHouse.

* the library loads a range page by page, stops (max_pages), resumes from its ClickHouse cursor
  without refetching, and ends with ticks == ground truth, coverage over the range and complete
  bars equal to bars computed from the ground truth;
* REST 429 with Retry-After is waited out, 5xx is retried, and the weight budget paces requests;
* the historical_backfill job (execute_in_process) loads, reports numeric metadata, and records
  bars_1m and a bars_1m_complete result per hour;
* gap repair: gaps recorded in ClickHouse whose trades are absent (one unrepairable after a
  connector ran with repair off, one left open by a dead connector) are repaired by the
  gap_repair_job and their hours rebuilt complete; a gap whose ids the venue does not return stays
  unrepairable with its minutes incomplete; the gap_repair sensor asks for a run only while
  something is due.
"""

from __future__ import annotations

import json
from decimal import Decimal

import dagster as dg
import pytest

from marketdata.backfill import (find_repairable_gaps, load_history, read_progress,
                                 rebuild_hours, span_hours)
from marketdata.bars import audit_hours
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE, now_us, parse_time_us
from marketdata.persist.rows import COVERAGE_COLUMNS, GAP_COLUMNS, TICK_COLUMNS
from marketdata.rest.client import RestError, VenueRest, WeightBudget

from .history_sim import SIM_END, history_sim, history_store
from .pipeline import bars_from_truth, read_truth

H10 = parse_time_us("2026-01-05T10:00Z")
H11 = H10 + US_PER_HOUR
H12 = H10 + 2 * US_PER_HOUR
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("bars_1m"), "bars_1m_complete")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with history_sim(tmp_path_factory.mktemp("sim"), "binance", SYMBOLS, rate=2000, seed=5) as s:
        yield s


@pytest.fixture
def store(tmp_path, monkeypatch, sim, clickhouse):
    """A fresh store and a config naming the simulator, via the deployment's env vars."""
    return history_store(tmp_path, monkeypatch, clickhouse, "binance", SYMBOLS, sim.rest_url)


def stored_ticks(ch, start_us, end_us) -> dict:
    rows = ch.rows("SELECT exchange, symbol, trade_id, ts_us, toString(close), toString(volume), side, source "
                   "FROM marketdata.ticks FINAL WHERE ts_us >= {a:Int64} AND ts_us < {b:Int64}",
                   {"a": start_us, "b": end_us})
    out = {(r[0], r[1], r[2]): (r[3], Decimal(r[4]), Decimal(r[5]), r[6]) for r in rows}
    assert len(out) == len(rows)
    return out


def truth_ticks(truth) -> dict:
    return {(ex, sym, tid): (ts, px, qty, side) for (ex, sym), trades in truth.items()
            for tid, ts, px, qty, side in trades}


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


def bars(ch, start_us, end_us) -> dict:
    rows = ch.rows("SELECT exchange, symbol, toUnixTimestamp(minute), open, high, low, close, volume, "
                   "trade_count, complete FROM marketdata.bars_1m FINAL WHERE minute >= {a:DateTime} "
                   "AND minute < {b:DateTime}", {"a": start_us // 1_000_000, "b": end_us // 1_000_000})
    return {(r[0], r[1], r[2] * 1_000_000): r[3:] for r in rows}


# --- historical backfill (library) ------------------------------------------------------------

def test_history_loads_resumes_and_matches_ground_truth(store, sim):
    seen = []
    first = load_history(store, "binance", SYMBOLS, H10, H12, rest_url=sim.rest_url, page_size=100,
                         max_pages=4, flush_pages=3, on_progress=lambda p: seen.append((p.symbol, p.pct)))
    assert not first.done and first.pages_this_run == 8
    cursor = read_progress(store, "binance", "BTC-USDT", H10, H12)
    assert cursor.status == "running" and cursor.pages == 4 and cursor.trades == 400
    assert int(cursor.next_id) == int(cursor.first_id) + 400 and 0 < cursor.pct < 100
    assert [p for s, p in seen if s == "BTC-USDT"] == sorted(p for s, p in seen if s == "BTC-USDT")

    second = load_history(store, "binance", SYMBOLS, H10, H12, rest_url=sim.rest_url, page_size=100)
    assert second.done and second.pct == 100.0
    truth = read_truth(sim.truth_path, H10, H12)
    n_truth = sum(len(v) for v in truth.values())
    assert second.trades == n_truth > 3000
    assert second.trades_this_run == n_truth - 800          # resumed: nothing loaded twice
    for p in second.symbols:
        assert p.status == "done" and p.total_trades == len(truth[("binance", p.symbol)])

    assert stored_ticks(store, H10 - US_PER_HOUR, H12 + US_PER_HOUR) == truth_ticks(truth)
    assert {r[0] for r in store.rows("SELECT DISTINCT source FROM marketdata.ticks")} == {"backfill"}
    for s in SYMBOLS:
        assert merged_coverage(store, s) == [(H10, H12 - 1)]

    rb = rebuild_hours(store, span_hours(H10, H12), [("binance", s) for s in SYMBOLS])
    assert rb.hours == 2 and len(rb.builds) == 1 and rb.bars_written == 240 and rb.complete_bars == 240
    assert all(a.passed for a in rb.audits)
    got = {k: v[:6] for k, v in bars(store, H10, H12).items() if v[5] > 0}
    assert got == bars_from_truth(truth)

    third = load_history(store, "binance", SYMBOLS, H10, H12, rest_url=sim.rest_url)
    assert third.skipped == SYMBOLS and third.pages_this_run == 0


def test_history_waits_out_429_and_retries_5xx(store, sim):
    start, end = H11, H11 + 10 * US_PER_MINUTE
    sim.fault("binance", kind="rest_fail", status=429, retry_after=1, count=2)
    sim.fault("binance", kind="rest_fail", status=503, count=1)
    res = load_history(store, "binance", ["BTC-USDT"], start, end, rest_url=sim.rest_url, page_size=500)
    assert res.done and res.rest["rate_limited"] == 2 and res.rest["retry_wait_s"] >= 2
    truth = read_truth(sim.truth_path, start, end)
    assert stored_ticks(store, start, end) == truth_ticks({k: v for k, v in truth.items() if k[1] == "BTC-USDT"})


def test_history_fails_cleanly_on_an_unknown_symbol(store, sim):
    with pytest.raises(RestError, match="DOGE-USDT not listed as trading"):
        load_history(store, "binance", ["DOGE-USDT"], H10, H11, rest_url=sim.rest_url)


def test_weight_budget_paces_by_minute_window():
    clock = [120.0]
    b = WeightBudget(100, clock=lambda: clock[0])
    assert [b.reserve(25) for _ in range(4)] == [0.0] * 4
    wait = b.reserve(25)
    assert 59.9 < wait <= 60.05                           # the next minute window
    b.observe(90)                                         # the venue counts others' weight too
    clock[0] = 180.5
    assert b.reserve(25) == 0.0 and b.used == 25          # new window
    b.observe(90)
    assert b.reserve(25) > 0                              # 90 + 25 > 100


def test_venue_rest_reads_the_weight_budget_from_the_venue(sim):
    with VenueRest("binance", sim.rest_url, weight_fraction=0.5) as rest:
        assert rest.venue_symbols(["BTC-USDT"]) == {"BTC-USDT": "BTCUSDT"}
        assert rest.budget.budget == 3000                 # exchangeInfo: 6000/min, half of it
        assert rest.server_time_us() > SIM_END


# --- historical_backfill (Dagster job) -------------------------------------------------------

def test_historical_backfill_job(store, sim):
    from marketdata.definitions import defs
    job = defs.get_job_def("historical_backfill")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"load_trade_history": {"config": {
                "venue": "binance", "symbols": SYMBOLS, "start": "2026-01-05T10:00Z",
                "end": "2026-01-05T11:00Z", "page_size": 250}}}},
            instance=instance, resources=defs.resources)
        assert result.success
        out = result.output_for_node("load_trade_history")
        assert out == [H10]
        obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        md = {k: v.value for k, v in obs[0].event_specific_data.asset_observation.metadata.items()}
        truth = read_truth(sim.truth_path, H10, H11)
        assert md["trades_loaded"] == sum(len(v) for v in truth.values()) and md["pct_complete"] == 100.0
        assert md["pages"] >= md["trades_loaded"] // 250 and md["symbols_done"] == 2
        mats = result.asset_materializations_for_node("rebuild_backfilled_bars")
        assert [(m.asset_key, m.partition) for m in mats] == [(dg.AssetKey("bars_1m"), "2026-01-05-10:00")]
        assert mats[0].metadata["complete_bars"].value == 120
        info = {i.partition_key: (i.latest_execution_status.value, i.is_current)
                for i in instance.event_log_storage.get_asset_check_partition_info([CHECK_KEY])}
        assert info == {"2026-01-05-10:00": ("SUCCEEDED", True)}     # current: targets this run's build


# --- gap repair -------------------------------------------------------------------------------

def insert_rows(ch, table, columns, rows):
    with ch.session() as c:
        c.raw_insert(table, columns, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(r) for r in rows).encode())


def tick_row(ex, sym, tid, ts, px, qty, side):
    return {"exchange": ex, "symbol": sym, "trade_id": tid, "ts_us": ts, "open": str(px), "high": str(px),
            "low": str(px), "close": str(px), "volume": str(qty), "trade_count": 1, "side": side,
            "recv_us": ts, "source": "ws", "event": "trade", "version": 0, "is_deleted": 0}


def gap_row(sym, gap_id, before, after, lo, hi, status, found_by="id_jump", detected=None):
    d = detected if detected is not None else now_us() - US_PER_HOUR
    return {"exchange": "binance", "symbol": sym, "gap_id": gap_id, "from_us": before, "to_us": after,
            "from_id": str(lo), "to_id": str(hi), "found_by": found_by, "status": status, "repaired_by": "",
            "recovered": 0, "detected_us": d, "updated_us": d,
            "detail": "repair disabled in config" if status == "unrepairable" else ""}


def stage_gaps(ch, truth):
    """What connectors would have left: the hour 10:00 of both symbols with trades missing and
    their spans uncovered, and the gap records. Returns {gap_id: (symbol, missing trade keys)}."""
    btc = sorted(truth[("binance", "BTC-USDT")], key=lambda t: int(t[0]))
    eth = sorted(truth[("binance", "ETH-USDT")], key=lambda t: int(t[0]))
    holes = {"g-unrep": ("BTC-USDT", btc, 200, 260, "unrepairable"),    # connector ran with repair off
             "g-time": ("BTC-USDT", btc, 400, 410, "unrepairable"),      # no ids known: repair by time
             "g-open": ("BTC-USDT", btc, 700, 705, "open")}              # connector died before repairing
    missing = {gid: (sym, {tr[0] for tr in rows[a:b]}) for gid, (sym, rows, a, b, _) in holes.items()}
    absent = set().union(*(m for _, m in missing.values()))
    insert_rows(ch, "marketdata.ticks", TICK_COLUMNS,
                [tick_row("binance", sym, *t) for sym, rows in (("BTC-USDT", btc), ("ETH-USDT", eth))
                 for t in rows if t[0] not in absent])
    gaps, cov = [], []
    for sym, rows in (("BTC-USDT", btc), ("ETH-USDT", eth)):
        cuts = []
        for gid, (s, r, a, b, status) in holes.items():
            if s == sym:
                before, after = r[a - 1][1], r[b][1]
                cuts.append((before, after))
                lo, hi = (r[a][0], r[b - 1][0]) if gid != "g-time" else ("", "")
                gaps.append(gap_row(sym, gid, before, after, lo, hi, status))
        if sym == "ETH-USDT":
            # ids the venue never had (beyond its tape) in 10:30..10:31: cannot come back
            lo = int(rows[-1][0]) + 1_000_000
            cuts.append((H10 + 30 * US_PER_MINUTE, H10 + 31 * US_PER_MINUTE + 5))
            gaps.append(gap_row(sym, "g-gone", *cuts[-1], lo, lo + 9, "unrepairable"))
        edge = H10
        for before, after in sorted(cuts):
            cov.append({"exchange": "binance", "symbol": sym, "from_us": edge, "to_us": before - 1,
                        "source": "ws", "recorded_us": 1})
            edge = after + 1
        cov.append({"exchange": "binance", "symbol": sym, "from_us": edge, "to_us": H11 - 1,
                    "source": "ws", "recorded_us": 1})
    insert_rows(ch, "marketdata.coverage", COVERAGE_COLUMNS, cov)
    insert_rows(ch, "marketdata.gaps", GAP_COLUMNS, gaps)
    return missing


def gap_status(ch) -> dict:
    return {r[0]: r[1:] for r in ch.rows("SELECT gap_id, status, repaired_by, recovered FROM marketdata.gaps FINAL")}


def test_gap_repair_job_repairs_rebuilds_and_leaves_the_unreturnable(store, sim):
    from marketdata.definitions import defs
    from marketdata.defs.repair import gap_repair

    truth = read_truth(sim.truth_path, H10, H11)
    missing = stage_gaps(store, truth)
    pairs = [("binance", s) for s in SYMBOLS]
    rebuild_hours(store, [H10], pairs)
    before = audit_hours(store, H10, H11, pairs)
    assert not any(a.passed for a in before)
    # A fresh open gap belongs to the live connector for a while: not offered yet.
    insert_rows(store, "marketdata.gaps", GAP_COLUMNS,
                [gap_row("BTC-USDT", "g-fresh", H11, H11 + 1, 10, 11, "open", detected=now_us())])
    due = {g.gap_id for g in find_repairable_gaps(store, exchanges=["binance"])}
    assert due == {"g-unrep", "g-time", "g-open", "g-gone"}

    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as ctx:
            req = gap_repair(ctx)
        assert isinstance(req, dg.RunRequest)
        conf = req.run_config["ops"]["repair_recorded_gaps"]["config"]
        assert sorted(conf["gap_ids"]) == ["g-gone", "g-open", "g-time", "g-unrep"] and conf["exchanges"] == ["binance"]

        job = defs.get_job_def("gap_repair_job")
        result = job.execute_in_process(run_config=req.run_config, instance=instance, resources=defs.resources,
                                        tags=req.tags)
        assert result.success
        assert sorted(result.output_for_node("repair_recorded_gaps")) == [H10]

        status = gap_status(store)
        assert status["g-unrep"] == ("repaired", "rest_by_id", 60)
        assert status["g-open"] == ("repaired", "rest_by_id", 5)
        assert status["g-time"][:2] == ("repaired", "rest_by_time") and status["g-time"][2] >= 10
        assert status["g-gone"][:2] == ("unrepairable", "") and status["g-gone"][2] == 0
        assert status["g-fresh"][0] == "open"
        # every trade of the hour is stored once, the repaired ones with source 'rest'
        assert stored_ticks(store, H10, H11) == truth_ticks(truth)
        sources = dict(store.rows("SELECT trade_id, source FROM marketdata.ticks FINAL WHERE symbol = 'BTC-USDT'"))
        assert {sources[t] for gid in ("g-unrep", "g-time", "g-open") for t in missing[gid][1]} == {"rest"}
        # coverage: BTC whole hour; ETH still has the hole the venue could not fill
        assert merged_coverage(store, "BTC-USDT") == [(H10, H11 - 1)]
        assert len(merged_coverage(store, "ETH-USDT")) == 2

        after = {a.symbol: a for a in audit_hours(store, H10, H11, pairs)}
        assert after["BTC-USDT"].passed
        assert after["ETH-USDT"].missing_minutes == ["2026-01-05T10:30Z", "2026-01-05T10:31Z"]
        got = {k: v[:6] for k, v in bars(store, H10, H11).items() if k[1] == "BTC-USDT" and v[6] > 0}
        assert got == {k: v for k, v in bars_from_truth(truth).items() if k[1] == "BTC-USDT"}

        obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        md = {k: v.value for k, v in obs[0].event_specific_data.asset_observation.metadata.items()}
        assert (md["gaps_repaired"], md["gaps_unrepairable"]) == (3, 1)
        assert md["trades_recovered"] == 65 + status["g-time"][2]
        assert md["open_gaps"] == 1 and md["unrepairable_gaps"] == 1
        mats = result.asset_materializations_for_node("rebuild_repaired_hours")
        assert [m.partition for m in mats] == ["2026-01-05-10:00"]
        (ev,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert ev.partition == "2026-01-05-10:00" and not ev.passed
        (info,) = instance.event_log_storage.get_asset_check_partition_info([CHECK_KEY])
        assert (info.partition_key, info.latest_execution_status.value, info.is_current) == (
            "2026-01-05-10:00", "FAILED", True)
        assert ev.metadata["missing_minutes"].value == {"binance:ETH-USDT": ["2026-01-05T10:30Z", "2026-01-05T10:31Z"]}

        # Nothing more is due: the unreturnable gap was just tried, the fresh one is in its grace.
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as ctx:
            assert isinstance(gap_repair(ctx), dg.SkipReason)
        # An hour later the unreturnable gap is tried again, at most 3 times in all.
        later = now_us() + 2 * US_PER_HOUR
        assert [g.gap_id for g in find_repairable_gaps(store, now=later, exchanges=["binance"])
                if g.gap_id != "g-fresh"] == ["g-gone"]
        store.command("INSERT INTO marketdata.gap_repair_attempts VALUES "
                      f"('binance', 'ETH-USDT', 'g-gone', 3, {now_us() + 1}, 'unrepairable', '')")
        assert "g-gone" not in {g.gap_id for g in find_repairable_gaps(store, now=later, exchanges=["binance"])}


def test_cli_backfill_and_status(store, sim, capsys):
    from marketdata.backfill.cli import main
    argv = ["--venue", "binance", "--symbols", "BTC-USDT", "--from", "2026-01-05T11:00Z", "--to", "2026-01-05T11:30Z",
            "--page-size", "200", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"from {sim.rest_url} (config " in out and "done" in out and "bars_1m rebuilt for 1 hour(s)" in out
    truth = read_truth(sim.truth_path, H11, H11 + 30 * US_PER_MINUTE)
    assert stored_ticks(store, H11, H11 + 30 * US_PER_MINUTE) == truth_ticks(
        {k: v for k, v in truth.items() if k[1] == "BTC-USDT"})
    assert main(argv) == 0 and "0 trades in 0 pages this run" in capsys.readouterr().out   # already loaded
    assert main(["--status"]) == 0
    assert "BTC-USDT" in capsys.readouterr().out
    assert main(["--venue", "binance", "--symbols", "BTC-USDT", "--from", "2026-01-05T11:00Z",
                 "--to", "2026-01-05T10:00Z"]) == 2
