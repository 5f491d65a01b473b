"""The read side on ClickHouse tables filled directly (ticks + coverage, then the real bars_1m
build): bars() / ticks() / completeness(), coarse bars and their completeness rule (including an
equity early close), validation errors, the Parquet export with its manifest and incremental
rewrites, the CLI and the daily Dagster export -- each checked against plain-Python references."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from decimal import Decimal

import dagster as dg
import orjson
import polars as pl
import pytest

from marketdata.bars.build import build_bars
from marketdata.bars.completeness import audit_hours
from marketdata.export import export, read_export
from marketdata.read import ReadError, bars, completeness, ticks

from . import read_reference as ref
from .harness import own_store

S, M, H = 1_000_000, 60_000_000, 3_600_000_000
D0 = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()) * S          # crypto day
EC = int(datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp()) * S         # day after Thanksgiving
CRYPTO = [("binance", "BTC-USDT"), ("binance", "ETH-USDT")]
AAPL = ("alpaca", "AAPL-USD")
C_START, C_END = D0, D0 + 3 * H                                   # 00:00-03:00
HOLES = {("binance", "BTC-USDT"): [(D0 + H + 17 * M + 20 * S, D0 + H + 19 * M + 5 * S)]}   # 01:17-01:19
A_START, A_END = EC + 14 * H, EC + 19 * H                         # 09:00-14:00 ET (close at 13:00 ET)
TICK_COLS = ["exchange", "symbol", "trade_id", "ts_us", "open", "high", "low", "close", "volume",
             "trade_count", "side", "recv_us", "source", "event", "version", "is_deleted"]


def _trades(rng, pair, start, end, per_min, skip=lambda ts: False):
    out, tid, px = [], 1000, Decimal("100.00") if pair[0] != "alpaca" else Decimal("230.00")
    for m in range(start, end, M):
        for _ in range(rng.choice([0, per_min, per_min, per_min + 3]) if m % (7 * M) else 0):
            ts = m + rng.randrange(M)
            if skip(ts):
                continue
            px = max(Decimal("1.00"), px + Decimal(rng.randint(-30, 30)) / 100)
            out.append((ts, tid, px, Decimal(rng.randint(1, 500)) / 1000))
            tid += rng.randint(1, 3)
    return sorted(out)


def _coverage(pair, start, end):
    spans, a = [], start
    for f, t in sorted(HOLES.get(pair, [])):
        spans.append((a, f - 1))
        a = t + 1
    spans.append((a, end))
    return spans


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with 3 h of two crypto pairs (one with a coverage hole) and the early-close
    session of AAPL (plus after-hours prints), built by build_bars; and the references."""
    tmp = tmp_path_factory.mktemp("read")
    with own_store(tmp) as (_, ch):
        yield _fill_world(tmp, ch)


def _fill_world(tmp, ch) -> dict:
    rng = random.Random(5)
    trades, covered = {}, {}
    for p in CRYPTO:
        trades[p] = _trades(rng, p, C_START, C_END, 5)
        covered[p] = _coverage(p, C_START, C_END)
    session = ref.nyse_session_minutes(EC)
    after = {m for m in range(A_START, A_END, M) if m >= max(session) + M}
    trades[AAPL] = _trades(rng, AAPL, A_START, A_END, 4, skip=lambda ts: ts // M * M not in session | set(sorted(after)[10:13]))
    covered[AAPL] = [(A_START, A_END)]
    rows = [{"exchange": p[0], "symbol": p[1], "trade_id": str(tid), "ts_us": ts, "open": str(px), "high": str(px),
             "low": str(px), "close": str(px), "volume": str(q), "trade_count": 1, "side": "buy", "recv_us": ts,
             "source": "ws", "event": "trade", "version": 1, "is_deleted": 0}
            for p, lst in trades.items() for ts, tid, px, q in lst]
    cov = [{"exchange": p[0], "symbol": p[1], "from_us": f, "to_us": t, "source": "ws", "recorded_us": 1}
           for p, lst in covered.items() for f, t in lst]
    gaps = [{"exchange": "binance", "symbol": "BTC-USDT", "gap_id": "g1", "from_us": HOLES[CRYPTO[0]][0][0],
             "to_us": HOLES[CRYPTO[0]][0][1], "from_id": "1", "to_id": "9", "found_by": "reconnect",
             "status": "unrepairable", "repaired_by": "", "recovered": 0, "detected_us": 1, "updated_us": 1, "detail": ""},
            {"exchange": "binance", "symbol": "ETH-USDT", "gap_id": "g2", "from_us": D0 + 30 * M, "to_us": D0 + 31 * M,
             "from_id": "5", "to_id": "7", "found_by": "id_jump", "status": "repaired", "repaired_by": "rest",
             "recovered": 1, "detected_us": 1, "updated_us": 1, "detail": ""}]
    with ch.session() as c:
        for table, cols, data in (("ticks", TICK_COLS, rows), ("coverage", list(cov[0]), cov), ("gaps", list(gaps[0]), gaps)):
            c.raw_insert(f"marketdata.{table}", cols, fmt="JSONEachRow",
                         insert_block="\n".join(json.dumps(r) for r in data).encode())
    b1 = build_bars(ch, C_START, C_END, CRYPTO)
    b2 = build_bars(ch, A_START, A_END, [AAPL])
    ref_1m = {**ref.minute_bars(trades, covered, CRYPTO, C_START, C_END),
              **ref.minute_bars(trades, covered, [AAPL], A_START, A_END)}
    expected = {p: set(range(C_START, C_END, M)) for p in CRYPTO}
    expected[AAPL] = session
    return dict(ch=ch, tmp=tmp, trades=trades, ref_1m=ref_1m, expected=expected, session=session, after=after,
                versions={**{p: b1.build_version for p in CRYPTO}, AAPL: b2.build_version})


@pytest.fixture(autouse=True)
def no_config(monkeypatch, tmp_path):
    """Only what is stored counts as known (no marketdata.yaml of the working directory)."""
    monkeypatch.setenv("MARKETDATA_CONFIG", str(tmp_path / "absent.yaml"))


def _vwap(trades, pair, m):
    ts = [t for t in trades[pair] if t[0] // M * M == m]
    v = sum(float(t[3]) for t in ts)
    return sum(float(t[2]) * float(t[3]) for t in ts) / v if v else None


def test_bars_1m_equal_bars_computed_from_the_trades(world):
    df = bars(["binance"], ["BTC-USDT", "ETH-USDT"], "2026-01-05T00:00Z", "2026-01-05T03:00Z", store=world["ch"])
    assert df.columns == ["exchange", "symbol", "time", "open", "high", "low", "close", "volume", "trade_count",
                          "vwap", "complete", "expected", "build_version"]
    assert df["time"].dtype == pl.Datetime("us", "UTC") and df["open"].dtype == pl.Decimal(38, 18)
    got = ref.frame_rows(df)
    want = {k: v for k, v in world["ref_1m"].items() if (k[0], k[1]) in CRYPTO}
    assert got.keys() == want.keys() and df.height == 2 * 180
    for k, w in want.items():
        g = got[k]
        assert {f: g[f] for f in w} == w, k
        assert g["build_version"] == world["versions"][(k[0], k[1])] and g["expected"]
        v = _vwap(world["trades"], (k[0], k[1]), k[2])
        assert g["vwap"] == pytest.approx(v if v is not None else float(w["close"]), rel=1e-12)
    incomplete = {k[2] for k, w in want.items() if not w["complete"]}
    assert incomplete == {D0 + H + 17 * M, D0 + H + 18 * M, D0 + H + 19 * M}
    only = bars("binance", "BTC-USDT", D0, C_END, complete_only=True, store=world["ch"])
    assert only.height == 180 - 3 and only["complete"].all()


@pytest.mark.parametrize("interval,every", [("5m", 5 * M), ("15m", 15 * M), ("1h", H), ("1d", 24 * H)])
def test_coarse_bars_equal_an_independent_resample(world, interval, every):
    start, end = (C_START, C_END) if every < 24 * H else (D0, D0 + 24 * H)
    for pairs, (a, b) in ((CRYPTO, (start, end)), ([AAPL], (EC + 14 * H, EC + 19 * H) if every < 24 * H else (EC, EC + 24 * H))):
        df = bars([p[0] for p in pairs], [p[1] for p in pairs], a, b, interval=interval, store=world["ch"])
        got = ref.frame_rows(df)
        mins = {k: v for k, v in world["ref_1m"].items() if (k[0], k[1]) in pairs and a <= k[2] < b}
        exp = {p: {m for m in world["expected"][p] if a <= m < b} if p == AAPL else set(range(a, b, M)) for p in pairs}
        want = ref.resample(mins, exp, every)
        assert got.keys() == want.keys(), (interval, sorted(got.keys() ^ want.keys())[:5])
        for k, w in want.items():
            assert {f: got[k][f] for f in w} == w, (interval, k)
        complete = bars([p[0] for p in pairs], [p[1] for p in pairs], a, b, interval=interval, complete_only=True,
                        store=world["ch"])
        assert set(ref.frame_rows(complete)) == {k for k, w in want.items() if w["complete"]}


def test_a_coarse_bar_with_an_incomplete_minute_is_incomplete(world):
    h = bars("binance", "BTC-USDT", C_START, C_END, interval="1h", store=world["ch"])
    assert h["complete"].to_list() == [True, False, True]
    assert h["complete_minutes"].to_list() == [60, 57, 60] and h["expected_minutes"].to_list() == [60] * 3
    five = bars("binance", "BTC-USDT", D0 + H, D0 + 2 * H, interval="5m", store=world["ch"])
    assert [t.strftime("%H:%M") for t in five.filter(~pl.col("complete"))["time"]] == ["01:15"]


def test_equity_early_close_day_is_the_session_and_hours_follow_it(world):
    """2026-11-27 closes at 13:00 ET (18:00 UTC): the day bar is the 210 session minutes; the
    18:00 UTC hour (a session hour on a normal day) has no expected minute and no bar; prints after
    the close do not enter coarse bars, and uncovered minutes after the close do not matter."""
    session = world["session"]
    assert len(session) == 210 and max(session) == EC + 17 * H + 59 * M
    day = bars("alpaca", "AAPL-USD", EC, EC + 24 * H, interval="1d", store=world["ch"])
    assert day.height == 1 and day["expected_minutes"][0] == 210
    in_session = [t for t in world["trades"][AAPL] if t[0] // M * M in session]
    assert day["trade_count"][0] == len(in_session) < len(world["trades"][AAPL])
    assert day["close"][0] == in_session[-1][2]
    # the session from 14:30 is built from 14:00 only, so the day is complete; the minutes after
    # 19:00 UTC (not built) are outside the session and do not count
    assert day["complete"][0]
    hours = bars("alpaca", "AAPL-USD", EC + 14 * H, EC + 19 * H, interval="1h", store=world["ch"])
    assert [t.hour for t in hours["time"]] == [14, 15, 16, 17]
    assert hours["expected_minutes"].to_list() == [30, 60, 60, 60] and hours["complete"].all()
    ones = bars("alpaca", "AAPL-USD", EC + 14 * H, EC + 19 * H, store=world["ch"])
    assert ones.filter(pl.col("expected")).height == 210 and ones.height == 300
    comp = completeness("alpaca", "AAPL-USD", EC + 14 * H, EC + 19 * H, store=world["ch"])
    assert comp["expected"].to_list() == [30, 60, 60, 60, 0] and comp["complete"].all()


def test_completeness_is_the_audit_the_check_runs(world):
    comp = completeness(["binance"], ["BTC-USDT", "ETH-USDT"], C_START, C_END, store=world["ch"])
    audits = [a for a in audit_hours(world["ch"], C_START, C_END, CRYPTO) if a.pair in CRYPTO]
    assert comp.height == len(audits) == 6
    for row, a in zip(comp.sort("hour", "exchange", "symbol").to_dicts(), sorted(audits, key=lambda a: (a.hour_start_us, a.key))):
        assert (row["expected"], row["stored"], row["complete"]) == (a.expected, a.stored, a.passed)
        assert [t.strftime("%Y-%m-%dT%H:%MZ") for t in row["missing_minutes"]] == a.missing_minutes
    bad = comp.filter(~pl.col("complete"))
    assert bad["symbol"].to_list() == ["BTC-USDT"]
    assert [t.strftime("%H:%M") for t in bad["missing_minutes"][0]] == ["01:17", "01:18", "01:19"]


def test_ticks_carry_their_minute_completeness(world):
    df = ticks("binance", "BTC-USDT", C_START, C_END, store=world["ch"])
    truth = world["trades"][CRYPTO[0]]
    assert df.height == len(truth)
    assert [(r["ts_us"], int(r["trade_id"]), r["close"], r["volume"]) for r in df.to_dicts()] == truth
    hole = {D0 + H + 17 * M, D0 + H + 18 * M, D0 + H + 19 * M}
    assert {int(t.timestamp()) * S // M * M for t in df.filter(~pl.col("minute_complete"))["time"]} == \
        {t[0] // M * M for t in truth if t[0] // M * M in hole}
    assert ticks("binance", "BTC-USDT", C_START, C_END, complete_only=True, store=world["ch"]).height == \
        len([t for t in truth if t[0] // M * M not in hole])


@pytest.mark.parametrize("call,message", [
    (lambda ch: bars("nyse", "AAPL-USD", D0, C_END, store=ch), "unknown venue.*'nyse'.*valid venues: binance"),
    (lambda ch: bars("binance", "btc-usdt", D0, C_END, store=ch), "not canonical.*BTC-USDT"),
    (lambda ch: bars("binance", "DOGE-USDT", D0, C_END, store=ch), "'DOGE-USDT' is neither configured nor stored on binance"),
    (lambda ch: bars(["binance", "okx"], "BTC-USDT", D0, C_END, store=ch), "venue 'okx' has none of the symbols"),
    (lambda ch: bars("binance", "BTC-USDT", D0, C_END, interval="2m", store=ch), "interval '2m'.*1m, 5m, 15m, 1h, 1d"),
    (lambda ch: bars("binance", "BTC-USDT", D0 + 5 * M, C_END, interval="1h", store=ch), "start .* not aligned"),
    (lambda ch: bars("binance", "BTC-USDT", C_END, D0, store=ch), "empty range"),
    (lambda ch: bars("binance", "BTC-USDT", "yesterday", C_END, store=ch), "start: time 'yesterday' is not ISO"),
    (lambda ch: ticks("binance", "alpaca:AAPL-USD", D0, C_END, store=ch), "names venue 'alpaca'"),
    (lambda ch: completeness("binance", [], D0, C_END, store=ch), "no symbols given"),
])
def test_bad_requests_fail_with_a_clear_error(world, call, message):
    with pytest.raises(ReadError, match=message):
        call(world["ch"])


def test_a_configured_symbol_without_data_reads_as_missing_not_as_an_error(world, tmp_path):
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text("venues:\n  binance:\n    symbols: [BTC-USDT, SOL-USDT]\n    endpoints: live\n")
    df = bars("binance", "SOL-USDT", C_START, C_END, interval="1h", store=world["ch"], config_path=str(cfg))
    assert df.height == 3 and not df["complete"].any() and df["complete_minutes"].to_list() == [0, 0, 0]


def test_export_round_trip_manifest_and_incremental_rewrite(world, tmp_path):
    ch, out = world["ch"], tmp_path / "out"
    frame = bars("binance", ["BTC-USDT", "ETH-USDT"], D0, D0 + 24 * H, store=ch)
    r = export(ch, "bars", CRYPTO, D0, D0 + 24 * H, out, progress=False)
    assert sorted(r.written) == ["binance/BTC-USDT/2026-01-05", "binance/ETH-USDT/2026-01-05"] and not r.unchanged
    assert (out / "bars/exchange=binance/symbol=BTC-USDT/date=2026-01-05/part-0.parquet").exists()
    assert read_export(out, "bars").equals(frame)
    raw = pl.read_parquet(out / "bars" / "**" / "*.parquet", hive_partitioning=True)       # any hive reader sees the keys
    assert {"exchange", "symbol", "date"} <= set(raw.columns) and raw.height == frame.height
    m = orjson.loads((out / "bars/manifest.json").read_bytes())
    assert m["query"]["from"] == "2026-01-05T00:00:00Z" and m["query"]["to"] == "2026-01-06T00:00:00Z"
    assert m["query"]["pairs"] == ["binance:BTC-USDT", "binance:ETH-USDT"]
    # the hours after 03:00 were never built: every minute of them is named missing, plus the hole
    want_missing = ["2026-01-05T01:17Z", "2026-01-05T01:18Z", "2026-01-05T01:19Z"] + [
        datetime.fromtimestamp(t / S, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ") for t in range(C_END, D0 + 24 * H, M)]
    assert m["completeness"]["binance:BTC-USDT"]["missing_minutes"] == want_missing
    assert m["completeness"]["binance:BTC-USDT"]["hours"]["2026-01-05T01:00Z"] == [60, 57]
    assert m["completeness"]["binance:ETH-USDT"]["missing"] == 21 * 60
    assert [(g["gap_id"], g["status"], g["repaired"]) for g in m["gaps"]] == [("g1", "unrepairable", False), ("g2", "repaired", True)]
    assert m["build_versions"]["binance:BTC-USDT"] == {"min": world["versions"][CRYPTO[0]], "max": world["versions"][CRYPTO[0]]}
    assert m["days"]["binance/BTC-USDT/2026-01-05"]["rows"] == 180
    assert m["days"]["binance/BTC-USDT/2026-01-05"]["stored"] == 177
    # again: nothing changed, nothing written
    r2 = export(ch, "bars", CRYPTO, D0, D0 + 24 * H, out, progress=False)
    assert r2.written == [] and len(r2.unchanged) == 2
    # the next day gets built: only its files are written, the first day's stay as they are
    D1 = D0 + 24 * H
    assert export(ch, "bars", CRYPTO, D0, D1 + 24 * H, out, progress=False).written == []
    build_bars(ch, D1, D1 + H, CRYPTO)
    r3 = export(ch, "bars", CRYPTO, D0, D1 + 24 * H, out, progress=False)
    assert r3.written == ["binance/BTC-USDT/2026-01-06", "binance/ETH-USDT/2026-01-06"]
    assert r3.unchanged == ["binance/BTC-USDT/2026-01-05", "binance/ETH-USDT/2026-01-05"]
    assert read_export(out, "bars").equals(bars("binance", ["BTC-USDT", "ETH-USDT"], D0, D1 + 24 * H, store=ch))
    # a rebuild of the second day (a new build version, same bars) rewrites that day only
    build_bars(ch, D1, D1 + H, CRYPTO)
    r4 = export(ch, "bars", CRYPTO, D0, D1 + 24 * H, out, progress=False)
    assert r4.written == r3.written and r4.unchanged == r3.unchanged
    # a deleted file is written again even though its fingerprint is unchanged
    (out / "bars/exchange=binance/symbol=BTC-USDT/date=2026-01-05/part-0.parquet").unlink()
    assert export(ch, "bars", CRYPTO, D0, D1 + 24 * H, out, progress=False).written == ["binance/BTC-USDT/2026-01-05"]


def test_ticks_export_round_trip(world, tmp_path):
    ch = world["ch"]
    r = export(ch, "ticks", [AAPL], EC, EC + 24 * H, tmp_path, progress=False)
    assert r.written == ["alpaca/AAPL-USD/2026-11-27"]
    assert read_export(tmp_path, "ticks").equals(ticks("alpaca", "AAPL-USD", EC, EC + 24 * H, store=ch))
    assert r.missing_minutes == {}


def test_export_cli(world, tmp_path, monkeypatch, capsys):
    from marketdata.cli import main
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", world["ch"].url)
    monkeypatch.delenv("MARKETDATA_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    args = ["export", "bars", "--venues", "binance", "--symbols", "BTC-USDT", "--from", "2026-01-05T00:00Z",
            "--to", "2026-01-05T03:00Z", "--out", str(tmp_path / "x"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 day file(s) written (180 rows)" in out and "binance:BTC-USDT: 3 missing minute(s), first 2026-01-05T01:17Z" in out
    assert main(args) == 0 and "0 day file(s) written" in capsys.readouterr().out
    assert main(["export", "bars", "--venues", "kraken", "--symbols", "BTC-USDT", "--from", "2026-01-05",
                 "--to", "2026-01-06", "--out", str(tmp_path / "y")]) == 2
    assert "venue 'kraken' has none of the symbols" in capsys.readouterr().err
    assert not (tmp_path / "y" / "bars").exists()


def test_dagster_daily_export_writes_the_day_with_its_completeness(world, tmp_path, monkeypatch):
    from marketdata.definitions import defs
    from marketdata.defs.export import bars_export_daily
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", world["ch"].url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(tmp_path / "none.yaml"))
    res = dg.materialize([bars_export_daily], resources=defs.resources, instance=dg.DagsterInstance.ephemeral(),
                         partition_key="2026-11-27",
                         run_config={"ops": {"bars_export_daily": {"config": {"out_dir": str(tmp_path / "exp")}}}})
    assert res.success
    (mat,) = res.asset_materializations_for_node("bars_export_daily")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["bars_files_written"] == 1 and md["expected_bars"] == 210 and md["stored_bars"] == 210
    assert md["completeness_pct"] == 100.0
    back = read_export(tmp_path / "exp", "bars")
    assert back.height == 300 and back.filter(pl.col("expected")).height == 210


def test_daily_export_schedule_writes_the_previous_day():
    from marketdata.definitions import defs
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    sched = repo.get_schedule_def("bars_export_daily_schedule")
    assert sched.cron_schedule == "45 0 * * *" and sched.job_name == "bars_export_daily_job"
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.DagsterInstance.ephemeral() as instance:
        ctx = dg.build_schedule_context(instance=instance,
                                        scheduled_execution_time=datetime(2026, 3, 2, 0, 45, tzinfo=timezone.utc))
        (req,) = sched.evaluate_tick(ctx).run_requests
    assert req.partition_key == "2026-03-01"
    node = repo.asset_graph.get(dg.AssetKey("bars_export_daily"))
    assert node.owners and node.description and dg.AssetKey("bars_1m") in node.parent_keys
