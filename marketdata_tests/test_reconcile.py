"""Reconciliation of bars_1m with the venue's own 1-minute candles: the comparison (library), and
against the Binance simulator's klines (consistent with its ground truth): an untouched hour
matches; a tampered stored tick (a correction changing its qty, a cancel) is named by minute, in
the library result and in the bars_1m_reconciled check."""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime, timezone
from decimal import Decimal

import dagster as dg
import pytest

from marketdata.bars.build import build_bars
from marketdata.bars.reconcile import Candle, StoredBar, compare_pair, reconcile
from marketdata.config import VenueConfig
from marketdata.defs.audit import bars_1m_reconciled
from marketdata.defs.bars.assets import bars_1m
from marketdata.defs.resources import ClickHouseResource, MarketdataConfigResource

from .harness import SimProc, wait_for, write_config

S = 1_000_000
M = 60 * S
H = 3600 * S
HOUR = int(datetime(2026, 3, 1, 9, tzinfo=timezone.utc).timestamp()) * S       # 2026-03-01 09:00 UTC
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
TICK_COLS = ["exchange", "symbol", "trade_id", "ts_us", "open", "high", "low", "close", "volume",
             "trade_count", "side", "recv_us", "source", "event", "version", "is_deleted"]


def bar(mu, n, vol, hi="10", lo="9", complete=True):
    return StoredBar(mu, Decimal(vol), n, Decimal(hi), Decimal(lo), complete)


def test_compare_names_the_minutes_and_measures():
    bars = {0: bar(0, 3, "1.5"), M: bar(M, 2, "1.0"), 2 * M: bar(2 * M, 0, "0", complete=True),
            3 * M: bar(3 * M, 1, "0.1", complete=False), 4 * M: bar(4 * M, 1, "0.2", hi="11")}
    candles = {0: Candle(0, Decimal("1.50000000"), 3, Decimal("10"), Decimal("9")),
               M: Candle(M, Decimal("1.2"), 3, Decimal("10"), Decimal("9")),      # a trade we lack
               3 * M: Candle(3 * M, Decimal("0.5"), 2),                             # incomplete: skipped
               4 * M: Candle(4 * M, Decimal("0.2"), 1, Decimal("10"), Decimal("9"))}
    r = compare_pair("binance", "BTC-USDT", bars, candles, has_trade_count=True)
    assert r.compared == 4 and r.skipped_incomplete == 1 and not r.passed
    assert [(m.minute_us, m.measure, m.ours, m.venue) for m in r.mismatches] == [
        (M, "trade_count", "2", "3"), (M, "volume", "1", "1.2"), (4 * M, "high", "11", "10")]
    assert r.mismatched_minutes == ["1970-01-01T00:01Z", "1970-01-01T00:04Z"]
    # a venue without trade counts: volume only (and the tolerance applies to it)
    r = compare_pair("x", "Y", {M: bar(M, 2, "1.0000001")}, {M: Candle(M, Decimal("1.0"))},
                     has_trade_count=False, volume_rel_tol=1e-6)
    assert r.passed and r.measures == ["volume", "high", "low"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """The Binance simulator run through 08:59-10:00:30 simulated (about 3 s of wall time)."""
    tmp = tmp_path_factory.mktemp("recon")
    truth = tmp / "truth.csv"
    proc = SimProc(["simulate", "--venues", "binance", "--symbols", ",".join(SYMBOLS), "--rate", "600",
                    "--seed", "5", "--start", "2026-03-01T08:59:00Z", "--end", "2026-03-01T10:00:30Z",
                    "--speed", "1200", "--ground-truth", str(truth)], dict(os.environ), tmp)
    try:
        wait_for(lambda: proc.stats("binance")["sim_time_us"] > HOUR + H + 40 * S, 60, "simulated 10:00:40",
                 on_timeout=proc.log)
        proc.control("binance", "/_sim/flush", {})
        proc.truth = truth
        yield proc
    finally:
        proc.stop()


def load_truth(ch, truth_path, hour: int = HOUR, exchange: str = "binance", symbols=SYMBOLS) -> list[dict]:
    rows = []
    with open(truth_path, newline="") as f:
        for r in csv.DictReader(f):
            ts = int(r["ts_us"])
            if hour <= ts < hour + H:
                rows.append({"exchange": r["exchange"], "symbol": r["symbol"], "trade_id": r["trade_id"],
                             "ts_us": ts, "open": r["price"], "high": r["price"], "low": r["price"],
                             "close": r["price"], "volume": r["qty"], "trade_count": 1, "side": r["side"],
                             "recv_us": ts, "source": "rest", "event": "trade", "version": 1, "is_deleted": 0})
    cov = [{"exchange": exchange, "symbol": s, "from_us": hour, "to_us": hour + H - 1, "source": "rest",
            "recorded_us": 1} for s in symbols]
    with ch.session() as c:
        c.raw_insert("marketdata.ticks", TICK_COLS, fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(t) for t in rows).encode())
        c.raw_insert("marketdata.coverage", list(cov[0]), fmt="JSONEachRow",
                     insert_block="\n".join(json.dumps(r) for r in cov).encode())
    return rows


def tamper(ch, rows, minute: int, symbol: str, **change) -> dict:
    """Insert a higher-version row for one stored trade in the given minute (a correction or a
    cancel), as a venue correction would arrive."""
    t = next(r for r in rows if r["symbol"] == symbol and (r["ts_us"] - HOUR) // M == minute)
    new = {**t, "version": 2, **change}
    with ch.session() as c:
        c.raw_insert("marketdata.ticks", TICK_COLS, fmt="JSONEachRow", insert_block=json.dumps(new).encode())
    return t


def venues(sim) -> dict:
    eps = sim.endpoints["binance"]
    return {"binance": VenueConfig("binance", SYMBOLS, eps["ws"], eps["rest"])}


def test_untouched_hour_matches_and_tampered_ticks_are_named(sim, clickhouse):
    rows = load_truth(clickhouse, sim.truth)
    assert len(rows) > 1000
    build_bars(clickhouse, HOUR, HOUR + H, [("binance", s) for s in SYMBOLS])
    ok = reconcile(clickhouse, HOUR, HOUR + H, venues(sim))
    assert ok.passed and ok.compared == 120 and ok.mismatched_minutes == 0, ok.mismatch_rows(5)
    assert {p.key for p in ok.pairs} == {"binance:BTC-USDT", "binance:ETH-USDT"}
    assert ok.pairs[0].measures[0] == "trade_count"

    corrected = tamper(clickhouse, rows, 17, "BTC-USDT", volume=str(Decimal(rows[0]["volume"]) + 1))
    tamper(clickhouse, rows, 41, "ETH-USDT", is_deleted=1)
    build_bars(clickhouse, HOUR, HOUR + H, [("binance", s) for s in SYMBOLS])
    bad = reconcile(clickhouse, HOUR, HOUR + H, venues(sim))
    assert not bad.passed and bad.compared == 120 and bad.mismatched_minutes == 2
    assert bad.mismatches_by_pair() == {"binance:BTC-USDT": ["2026-03-01T09:17Z"],
                                        "binance:ETH-USDT": ["2026-03-01T09:41Z"]}
    by = {(m.symbol, m.measure): m for m in bad.mismatch_rows()}
    assert ("BTC-USDT", "trade_count") not in by                     # a correction keeps the count
    v = by[("BTC-USDT", "volume")]
    assert Decimal(v.ours) - Decimal(v.venue) == Decimal(rows[0]["volume"]) + 1 - Decimal(corrected["volume"])
    c = by[("ETH-USDT", "trade_count")]
    assert int(c.ours) == int(c.venue) - 1                           # the cancel removed one trade


def test_reconciled_check_names_the_tampered_minute(sim, clickhouse, tmp_path, monkeypatch):
    rows = load_truth(clickhouse, sim.truth)
    tamper(clickhouse, rows, 33, "ETH-USDT", is_deleted=1)
    eps = sim.endpoints["binance"]
    cfg = write_config(tmp_path / "marketdata.yaml", {"binance": {"symbols": SYMBOLS, "ws_url": eps["ws"],
                                                                  "rest_url": eps["rest"]}})
    resources = {"clickhouse": ClickHouseResource(url=clickhouse.url),
                 "marketdata_config": MarketdataConfigResource(path=str(cfg))}
    result = dg.materialize([bars_1m, bars_1m_reconciled], partition_key="2026-03-01-09:00", resources=resources,
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (ev,) = result.get_asset_check_evaluations()
    assert ev.asset_check_key.name == "bars_1m_reconciled" and ev.partition == "2026-03-01-09:00"
    assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN and "09:33" in ev.description
    md = {k: v.value for k, v in ev.metadata.items()}
    assert md["minutes_compared"] == 120 and md["mismatched_minutes"] == 1
    assert md["mismatches_by_pair"] == {"binance:ETH-USDT": ["2026-03-01T09:33Z"]}
    assert {r.data["measure"] for r in md["mismatches"].records} >= {"trade_count", "volume"}
    assert {r.data["minute"] for r in md["mismatches"].records} == {"2026-03-01T09:33Z"}


def test_unreachable_venue_is_listed_not_failed(clickhouse, tmp_path):
    rows = [{"exchange": "binance", "symbol": "BTC-USDT", "trade_id": "1", "ts_us": HOUR + 5 * S, "open": "1",
             "high": "1", "low": "1", "close": "1", "volume": "1", "trade_count": 1, "side": "buy",
             "recv_us": HOUR, "source": "ws", "event": "trade", "version": 1, "is_deleted": 0}]
    with clickhouse.session() as c:
        c.raw_insert("marketdata.ticks", TICK_COLS, fmt="JSONEachRow", insert_block=json.dumps(rows[0]).encode())
    build_bars(clickhouse, HOUR, HOUR + H, [("binance", "BTC-USDT"), ("binance", "ETH-USDT")])
    dead = {"binance": VenueConfig("binance", SYMBOLS, "ws://127.0.0.1:9", "http://127.0.0.1:9")}
    r = reconcile(clickhouse, HOUR, HOUR + H, dead)
    # listed, not failed: only a minute that differs from the venue fails reconciliation
    assert r.passed and r.compared == 0 and set(r.errors) == {"binance:BTC-USDT", "binance:ETH-USDT"}
    assert "cannot connect" in r.errors["binance:BTC-USDT"]
    r = reconcile(clickhouse, HOUR, HOUR + H, {})
    assert r.passed and r.compared == 0 and "binance" in r.unsupported


# --- Alpaca: keys from the environment, as `marketdata up` gives them to Dagster ------------------

ALPACA_HOUR = int(datetime(2026, 3, 2, 15, tzinfo=timezone.utc).timestamp()) * S     # Mon 10:00 ET, in session
ALPACA_SYMBOLS = ["AAPL-USD", "MSFT-USD"]


@pytest.fixture(scope="module")
def alpaca_sim(tmp_path_factory):
    """The Alpaca simulator with the demo keys `up` gives it, run through 14:59-16:00:30."""
    from marketdata.supervisor import DEMO_CREDENTIALS
    sim_keys = DEMO_CREDENTIALS["alpaca"][1]
    tmp = tmp_path_factory.mktemp("recon-alpaca")
    truth = tmp / "truth.csv"
    proc = SimProc(["simulate", "--venues", "alpaca", "--symbols", ",".join(ALPACA_SYMBOLS), "--rate", "300",
                    "--seed", "9", "--start", "2026-03-02T14:59:00Z", "--end", "2026-03-02T16:00:30Z",
                    "--speed", "1200", "--ground-truth", str(truth),
                    "--venue-option", f"alpaca.key={json.dumps(sim_keys['key'])}",
                    "--venue-option", f"alpaca.secret={json.dumps(sim_keys['secret'])}"], dict(os.environ), tmp)
    try:
        wait_for(lambda: proc.stats("alpaca")["sim_time_us"] > ALPACA_HOUR + H + 20 * S, 60, "simulated 16:00:20",
                 on_timeout=proc.log)
        proc.control("alpaca", "/_sim/flush", {})
        proc.truth = truth
        yield proc
    finally:
        proc.stop()


def test_reconciled_check_uses_the_platforms_simulator_keys_and_lists_a_venue_without_them(
        alpaca_sim, clickhouse, tmp_path, monkeypatch):
    from marketdata.supervisor import demo_credentials
    load_truth(clickhouse, alpaca_sim.truth, ALPACA_HOUR, "alpaca", ALPACA_SYMBOLS)
    eps = alpaca_sim.endpoints["alpaca"]
    cfg = write_config(tmp_path / "marketdata.yaml", {"alpaca": {"symbols": ALPACA_SYMBOLS, "ws_url": eps["ws"],
                                                                 "rest_url": eps["rest"]}})
    resources = {"clickhouse": ClickHouseResource(url=clickhouse.url),
                 "marketdata_config": MarketdataConfigResource(path=str(cfg))}

    def check():
        result = dg.materialize([bars_1m, bars_1m_reconciled], partition_key="2026-03-02-15:00",
                                resources=resources, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        (ev,) = result.get_asset_check_evaluations()
        return ev, {k: v.value for k, v in ev.metadata.items()}

    for k in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(k, raising=False)
    # the environment `up` gives Dagster: the same demo keys its alpaca connector gets
    for k, v in demo_credentials(["alpaca"])["alpaca"].items():
        monkeypatch.setenv(k, v)
    ev, md = check()
    assert ev.passed, ev.description
    assert md["minutes_compared"] == 120 and md["mismatched_minutes"] == 0 and md["pairs_unavailable"] == 0
    assert "errors" not in md and "match the venue's candles" in ev.description

    # no keys at all (a Dagster started without them): listed as not reconciled, not a failure
    for k in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(k)
    ev, md = check()
    assert ev.passed and md["pairs_unavailable"] == 2 and md["minutes_compared"] == 0
    assert set(md["errors"]) == {"alpaca:AAPL-USD", "alpaca:MSFT-USD"}
    assert "needs API keys" in md["errors"]["alpaca:AAPL-USD"] and "not reconciled" in ev.description
