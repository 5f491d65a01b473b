"""The read side on data the pipeline wrote: simulator -> `marketdata ingest` -> Redis ->
`marketdata persist` -> ClickHouse -> bars_1m, checked against the simulator's ground truth.

Two simulated hours, each run once for the module (module-scoped fixtures):

* Binance 2026-01-05 10:00 UTC without gap repair: a trade-id gap and a closed connection leave
  unrepairable gaps, so some minutes are incomplete;
* Alpaca 2026-11-27 17:00 UTC, the last hour of the early close after Thanksgiving (13:00 ET).

Asserted: bars() 1m equal bars computed from the ground truth; 5m and 1h bars equal a plain
resample of those, complete exactly when every expected minute is; the equity day bar is the
session; a Parquet round trip gives the frames back; the manifest names the missing minutes and
the unrepairable gaps exactly.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

import orjson
import pytest

from marketdata.bars.build import build_bars
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE as M
from marketdata.export import export, read_export
from marketdata.read import bars, completeness, ticks
from marketdata.storage.redis import EmbeddedRedis

from . import read_reference as ref
from .harness import own_store, wait_for
from .pipeline import LEAD_MINUTES, Pipeline, read_truth, unrepairable_spans

H = US_PER_HOUR
BIN_HOUR = int(datetime(2026, 1, 5, 10, tzinfo=timezone.utc).timestamp()) * 1_000_000
EC_DAY = int(datetime(2026, 11, 27, tzinfo=timezone.utc).timestamp()) * 1_000_000
ALP_HOUR = EC_DAY + 17 * H                     # 12:00-13:00 ET, the session's last hour
BIN_SYMBOLS = ["BTC-USDT", "ETH-USDT"]
ALP_SYMBOLS = ["AAPL-USD", "MSFT-USD"]
KEY, SECRET = "PKTEST1234", "s3cr3t-n0t-f0r-l0gs"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("read_e2e")
    with own_store(tmp) as (_, ch), EmbeddedRedis(tmp / "redis", publish_url=False) as srv:
        yield {"tmp": tmp, "ch": ch, "redis": srv.url}


def _iso_minutes(minutes) -> list[str]:
    return [datetime.fromtimestamp(m / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%MZ") for m in sorted(minutes)]


def _reference(p: Pipeline, ch) -> dict:
    """Ground truth (minus the trades lost in unrepairable gaps) -> minute bars of the hour, with
    complete = the minute is untouched by any unrepairable gap."""
    truth = read_truth(p.truth_path, p.hour - LEAD_MINUTES * M, p.hour_end)
    spans = unrepairable_spans(ch, p.venue)
    stored = {(r[0], r[1]) for r in ch.rows("SELECT symbol, trade_id FROM marketdata.ticks FINAL "
                                            "WHERE exchange = {v:String}", {"v": p.venue})}
    trades, lost = {}, defaultdict(list)
    for (ex, sym), lst in truth.items():
        keep = []
        for tid, ts, px, qty, _ in lst:
            if (sym, tid) in stored or not any(f <= ts <= t for f, t in spans.get(sym, [])):
                keep.append((ts, int(tid) if tid.isdigit() else tid, px, qty))
            else:
                lost[(ex, sym)].append(tid)
        trades[(ex, sym)] = sorted(keep, key=lambda t: (t[0], t[1]))
    pairs = [(p.venue, s) for s in p.symbols]
    touched = defaultdict(set)
    for sym, lst in spans.items():
        for f, t in lst:
            touched[(p.venue, sym)] |= {m for m in range(f // M * M, t + 1, M) if p.hour <= m < p.hour_end}
    one = ref.minute_bars(trades, {pr: [(p.hour, p.hour_end)] for pr in pairs}, pairs, p.hour, p.hour_end)
    for (ex, sym, m), b in one.items():
        b["complete"] = m not in touched[(ex, sym)]
    return {"bars": one, "touched": dict(touched), "trades": trades, "lost": lost, "spans": spans}


def _run(world: dict, name: str, **kw) -> Pipeline:
    tmp = world["tmp"] / name
    tmp.mkdir()
    return Pipeline(tmp, world["redis"], world["ch"], **kw)


@pytest.fixture(scope="module")
def binance(env):
    """An hour of Binance with repair off: a skipped id range at 10:15 and a closed link at 10:35."""
    p = _run(env, "binance", venue="binance", repair=False, rate=1500, symbols=BIN_SYMBOLS, hour=BIN_HOUR)
    try:
        p.wait_health("connections", 1)
        wait_for(lambda: p.sim_now() >= BIN_HOUR + 15 * M, 90, "sim time 10:15")
        p.sim.fault("binance", kind="skip_ids", symbol="BTC-USDT", count=40)
        p.wait_health("gaps_unrepairable", 1)
        wait_for(lambda: p.sim_now() >= BIN_HOUR + 35 * M, 90, "sim time 10:35")
        p.inject(kind="close")
        p.wait_health("reconnects", 1)
        p.wait_hour_persisted()
        p.sim.control("binance", "/_sim/flush", {})
    finally:
        p.stop()
    build_bars(env["ch"], p.hour, p.hour_end, [("binance", s) for s in BIN_SYMBOLS])
    return {"p": p, **_reference(p, env["ch"])}


@pytest.fixture(scope="module")
def alpaca(env):
    """The last session hour of the 2026-11-27 early close, on Alpaca (repair by time on). The
    simulator keeps printing after the 13:00 ET close (extended hours, ``sessions=always``) up to
    its end at 18:02 UTC: prints that are stored but lie outside the session."""
    keys = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    p = _run(env, "alpaca", venue="alpaca", symbols=ALP_SYMBOLS, hour=ALP_HOUR, options={}, env=keys, rate=1500,
             sim_args=["--venue-option", f"alpaca.key={KEY}", "--venue-option", f"alpaca.secret={SECRET}",
                       "--venue-option", "alpaca.sessions=always"])
    try:
        p.wait_health("connections", 1)
        p.wait_hour_persisted()
        p.sim.control("alpaca", "/_sim/flush", {})
    finally:
        p.stop()
    # 18:00-19:00 too: its first minutes hold the after-hours prints
    build_bars(env["ch"], p.hour, p.hour_end + H, [("alpaca", s) for s in ALP_SYMBOLS])
    return {"p": p, **_reference(p, env["ch"])}


def _compare(got_df, want: dict, fields=None):
    got = ref.frame_rows(got_df)
    assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())[:5]
    for k, w in want.items():
        f = fields or w.keys()
        assert {x: got[k][x] for x in f} == {x: w[x] for x in f}, k


def test_binance_1m_bars_equal_the_ground_truth(binance, env):
    p = binance["p"]
    assert binance["touched"].get(("binance", "BTC-USDT")), "the skipped ids must leave incomplete minutes"
    assert sum(len(v) for v in binance["lost"].values()) >= 40
    df = bars("binance", BIN_SYMBOLS, p.hour, p.hour_end, store=env["ch"])
    _compare(df, binance["bars"])
    assert df.height == 120 and df["expected"].all()


@pytest.mark.parametrize("interval,every", [("5m", 5 * M), ("1h", H)])
def test_binance_coarse_bars_equal_a_resample_and_follow_the_rule(binance, env, interval, every):
    p = binance["p"]
    pairs = [("binance", s) for s in BIN_SYMBOLS]
    want = ref.resample(binance["bars"], {pr: set(range(p.hour, p.hour_end, M)) for pr in pairs}, every)
    df = bars("binance", BIN_SYMBOLS, p.hour, p.hour_end, interval=interval, store=env["ch"])
    _compare(df, want)
    incomplete = {(k[0], k[1], k[2]) for k, w in want.items() if not w["complete"]}
    touched_buckets = {(ex, sym, m // every * every) for (ex, sym), ms in binance["touched"].items() for m in ms}
    assert incomplete == touched_buckets and incomplete
    only = bars("binance", BIN_SYMBOLS, p.hour, p.hour_end, interval=interval, complete_only=True, store=env["ch"])
    assert set(ref.frame_rows(only)) == set(want) - incomplete


def test_binance_ticks_are_the_stored_ground_truth(binance, env):
    p = binance["p"]
    df = ticks("binance", "BTC-USDT", p.hour, p.hour_end, store=env["ch"])
    want = [t for t in binance["trades"][("binance", "BTC-USDT")] if p.hour <= t[0] < p.hour_end]
    assert [(r["ts_us"], int(r["trade_id"]), r["close"], r["volume"]) for r in df.to_dicts()] == want
    touched = binance["touched"][("binance", "BTC-USDT")]
    assert {int(t.timestamp() * 1e6) // M * M for t in df.filter(~df["minute_complete"])["time"]} <= touched


def test_binance_export_round_trip_and_manifest_names_the_missing_minutes(binance, env, tmp_path):
    p, ch = binance["p"], env["ch"]
    pairs = [("binance", s) for s in BIN_SYMBOLS]
    r = export(ch, "bars", pairs, p.hour, p.hour_end, tmp_path, progress=False)
    assert read_export(tmp_path, "bars").equals(bars("binance", BIN_SYMBOLS, p.hour, p.hour_end, store=ch))
    m = orjson.loads((tmp_path / "bars" / "manifest.json").read_bytes())
    named = {k: v["missing_minutes"] for k, v in m["completeness"].items() if v["missing_minutes"]}
    assert named == {f"{ex}:{sym}": _iso_minutes(ms) for (ex, sym), ms in binance["touched"].items() if ms}
    assert r.missing_minutes == named
    unrep = sorted((g["symbol"], g["from_us"], g["to_us"]) for g in m["gaps"] if g["status"] == "unrepairable")
    assert unrep == sorted((s, f, t) for s, lst in binance["spans"].items() for f, t in lst)
    assert all(not g["repaired"] for g in m["gaps"] if g["status"] == "unrepairable")
    assert {g["found_by"] for g in m["gaps"]} >= {"id_jump", "reconnect"}
    rt = export(ch, "ticks", pairs, p.hour, p.hour_end, tmp_path, progress=False)
    assert len(rt.written) == 2
    assert read_export(tmp_path, "ticks").equals(ticks("binance", BIN_SYMBOLS, p.hour, p.hour_end, store=ch))


def test_alpaca_early_close_bars_follow_the_session(alpaca, env):
    p, ch = alpaca["p"], env["ch"]
    pairs = [("alpaca", s) for s in ALP_SYMBOLS]
    _compare(bars("alpaca", ALP_SYMBOLS, p.hour, p.hour_end, store=ch), alpaca["bars"])
    session = ref.nyse_session_minutes(EC_DAY)
    assert len(session) == 210 and max(session) + M == ALP_HOUR + H       # closes at 18:00 UTC
    for interval, every in (("5m", 5 * M), ("1h", H)):
        df = bars("alpaca", ALP_SYMBOLS, p.hour, p.hour_end + H, interval=interval, store=ch)
        want = ref.resample(alpaca["bars"], {pr: {m for m in session if p.hour <= m < p.hour_end} for pr in pairs}, every)
        _compare(df, want)
        assert df["complete"].all()       # repaired by time: every session minute is complete
    ones = bars("alpaca", ALP_SYMBOLS, p.hour, p.hour_end + H, store=ch)
    after = ones.filter(ones["time"] >= datetime.fromtimestamp(p.hour_end / 1e6, tz=timezone.utc))
    assert after.filter(after["trade_count"] > 0).height >= 2 and not after["expected"].any()
    hours = bars("alpaca", ALP_SYMBOLS, p.hour, p.hour_end + H, interval="1h", store=ch)
    assert [t.hour for t in hours["time"]] == [17, 17], "18:00 UTC is after the early close: no bar"
    day = bars("alpaca", ALP_SYMBOLS, EC_DAY, EC_DAY + 24 * H, interval="1d", store=ch)
    assert day["expected_minutes"].to_list() == [210, 210] and day["complete_minutes"].to_list() == [60, 60]
    assert not day["complete"].any()
    assert day["trade_count"].to_list() == [sum(b["trade_count"] for k, b in alpaca["bars"].items() if k[1] == s)
                                            for s in ALP_SYMBOLS]
    comp = completeness("alpaca", ALP_SYMBOLS, EC_DAY, EC_DAY + 24 * H, store=ch)
    for sym in ALP_SYMBOLS:
        c = comp.filter(comp["symbol"] == sym)
        assert c["expected"].sum() == 210
        missing = [int(t.timestamp()) * 1_000_000 for ts in c["missing_minutes"] for t in ts]
        assert missing == sorted(m for m in session if m < ALP_HOUR)     # 14:30-16:59, nothing after the close
