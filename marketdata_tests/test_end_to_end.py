"""The whole path for Binance, as real processes: simulator -> `marketdata ingest` -> Redis ->
`marketdata persist` -> ClickHouse -> bars_1m and the completeness audit.

One simulated hour runs in ~30 wall seconds (speed 120) with a silent drop, a closed connection,
a trade-id gap, malformed frames and an unknown symbol injected. Afterwards ClickHouse must hold
exactly the simulator's ground truth for the hour, coverage must span the hour, bars must equal
bars computed independently from the ground truth, and the completeness audit must pass. With
repair disabled, the audit must fail and name exactly the minutes the unrepairable gaps touch.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.bars.build import build_bars
from marketdata.bars.completeness import audit_hours
from marketdata.clock import US_PER_HOUR, US_PER_MINUTE
from marketdata.storage.redis import client
from marketdata.stream import health_key

from .harness import Proc, SimProc, platform_env, wait_for, write_config

HOUR = int(datetime(2026, 1, 5, 10, tzinfo=timezone.utc).timestamp() * 1_000_000)
HOUR_END = HOUR + US_PER_HOUR
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
SPEED = 120
# OKX drops a link it has heard nothing from (30 s, 3 s here): our text pings must keep it alive.
SIM_ARGS = {"binance": [], "okx": ["--venue-option", "okx.idle_timeout=3"]}
VENUE_OPTIONS = {"binance": {}, "okx": {"ping_interval": 1.0}}


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_truth(path: Path, start_us: int, end_us: int) -> dict[tuple[str, str], list[tuple]]:
    out: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            ts = int(r["ts_us"])
            if start_us <= ts < end_us:
                out[(r["exchange"], r["symbol"])].append((r["trade_id"], ts, Decimal(r["price"]),
                                                          Decimal(r["qty"]), r["side"]))
    return out


def bars_from_truth(truth: dict) -> dict[tuple[str, str, int], tuple]:
    """Minute bars computed independently of the platform's SQL."""
    by_min: dict[tuple[str, str, int], list] = defaultdict(list)
    for (ex, sym), trades in truth.items():
        for tid, ts, px, qty, _ in trades:
            by_min[(ex, sym, ts // US_PER_MINUTE * US_PER_MINUTE)].append((ts, int(tid), px, qty))
    bars = {}
    for k, ts_list in by_min.items():
        ts_list.sort()
        pxs = [t[2] for t in ts_list]
        bars[k] = (pxs[0], max(pxs), min(pxs), pxs[-1], sum(t[3] for t in ts_list), len(ts_list))
    return bars


class Pipeline:
    """Simulator, connector and persist worker as subprocesses on a temp data dir."""

    def __init__(self, tmp: Path, redis_url: str, ch, *, repair: bool, rate: int = 2000, venue: str = "binance"):
        self.tmp, self.ch, self.venue = tmp, ch, venue
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.truth_path = tmp / "truth.csv"
        env = platform_env(tmp, redis_url, ch.url)
        self.sim = SimProc(["simulate", "--venues", venue, "--symbols", ",".join(SYMBOLS), *SIM_ARGS[venue],
                            "--rate", str(rate), "--seed", "11", "--start", _iso(HOUR - 5 * US_PER_MINUTE),
                            "--speed", str(SPEED), "--end", _iso(HOUR_END + 2 * US_PER_MINUTE),
                            "--ping-interval", "1", "--pong-timeout", "5",
                            "--ground-truth", str(self.truth_path)], env, self.logs)
        eps = self.sim.endpoints[venue]
        cfg = write_config(tmp / "marketdata.yaml", {venue: {
            "symbols": SYMBOLS, "ws_url": eps["ws"], "rest_url": eps["rest"], "repair": repair,
            "idle_timeout": 2.5, "options": VENUE_OPTIONS[venue]}})
        env["MARKETDATA_CONFIG"] = str(cfg)
        self.persist = Proc("persist", ["persist", "--consumer", "e2e"], env, self.logs)
        self.ingest = Proc("ingest", ["ingest", "--venue", venue], env, self.logs)
        self.r = client(redis_url)

    def health(self, field: str) -> int:
        v = self.r.hget(health_key(self.venue), field)
        return int(v) if v is not None else 0

    def diagnostics(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()}" for p in (self.ingest, self.persist, self.sim))

    def wait_health(self, field: str, at_least: int, timeout: float = 30) -> None:
        wait_for(lambda: self.health(field) >= at_least, timeout, f"{self.venue} health {field} >= {at_least}",
                 on_timeout=self.diagnostics)

    def inject(self, **fault) -> dict:
        """A connection fault, retried until the simulator applied it to an open connection (one
        injected while the connector is between connections hits nothing and changes nothing)."""
        def attempt():
            f = self.sim.fault(self.venue, **fault)["fault"]
            return f if f["applied_to"] else None
        return wait_for(attempt, 30, f"{fault['kind']} applied to an open connection", interval=0.2,
                        on_timeout=self.diagnostics)

    def sim_now(self) -> int:
        return self.sim.stats(self.venue)["sim_time_us"]

    def wait_hour_persisted(self, timeout: float = 120) -> None:
        """Wait until the connector vouches past the hour and ClickHouse holds that coverage."""
        self.wait_health("covered_to_us", HOUR_END + 30 * 1_000_000, timeout)

        def covered() -> bool:
            rows = self.ch.rows(
                "SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = {v:String} GROUP BY symbol",
                {"v": self.venue})
            return len(rows) == len(SYMBOLS) and all(t >= HOUR_END for _, t in rows)
        wait_for(covered, timeout, "coverage past the hour in ClickHouse", interval=0.5,
                 on_timeout=self.diagnostics)

    def stop(self) -> None:
        self.ingest.stop()
        self.sim.stop()
        self.persist.stop()
        self.r.close()


@pytest.fixture
def pipeline_factory(tmp_path, redis_server, clickhouse):
    made = []

    def make(**kw) -> Pipeline:
        p = Pipeline(tmp_path, redis_server.url, clickhouse, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.stop()


@pytest.mark.parametrize("venue", ["binance", "okx"])
def test_end_to_end_with_faults_matches_ground_truth(venue, pipeline_factory, clickhouse, tmp_path, monkeypatch):
    p = pipeline_factory(repair=True, venue=venue)
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    faults = []
    faults.append(p.inject(kind="silent_drop"))
    p.wait_health("reconnects", 1)
    faults.append(p.inject(kind="close"))
    p.wait_health("reconnects", 2)
    p.wait_health("connections", 1)
    faults.append(p.sim.fault(venue, kind="skip_ids", symbol="BTC-USDT", count=25)["fault"])
    p.wait_health("gaps_repaired", p.health("gaps_repaired") + 1)
    faults.append(p.inject(kind="malformed", count=3))
    faults.append(p.inject(kind="unknown_symbol"))
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert all(HOUR <= f["sim_time_us"] < HOUR_END for f in faults), \
        "faults must land inside the audited hour (machine too slow?)"
    p.wait_hour_persisted()
    p.sim.control(venue, "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert f"{venue}: malformed frame skipped" in p.ingest.log(400)
    # Only the two injected drops: keepalive held the link otherwise (OKX cuts a quiet client).
    assert p.health("reconnects") == 2, p.ingest.log(200)

    truth = read_truth(p.truth_path, HOUR, HOUR_END)
    assert sum(len(v) for v in truth.values()) > 20_000
    with clickhouse.session() as c:
        rows = c.query("SELECT exchange, symbol, trade_id, trade_count, ts_us, toString(close), toString(volume), side"
                       " FROM marketdata.ticks FINAL WHERE exchange = {v:String}"
                       " AND ts_us >= {a:Int64} AND ts_us < {b:Int64}",
                       parameters={"v": venue, "a": HOUR, "b": HOUR_END}).result_rows
        gaps = c.query("SELECT found_by, status FROM marketdata.gaps FINAL").result_rows
    # A tick covers the fill ids tradeId-count+1 .. tradeId (count is 1 but for venue aggregates).
    fills = {(ex, sym, tid): (ts, px, qty, side) for (ex, sym), trades in truth.items()
             for tid, ts, px, qty, side in trades}
    covered: list = []
    for ex, sym, tid, count, ts, px, qty, side in rows:
        ids = [(ex, sym, str(i)) for i in range(int(tid) - count + 1, int(tid) + 1)]
        covered += ids
        parts = [fills.get(i) for i in ids]
        assert all(parts), f"tick {tid} covers fills the venue never made"
        assert {(f[0], f[1], f[3]) for f in parts} == {(ts, Decimal(px), side)}, tid
        assert sum(f[2] for f in parts) == Decimal(qty), tid
    assert len(covered) == len(set(covered)), "a fill is stored twice"
    missing = fills.keys() - set(covered)
    assert not missing, f"{len(missing)} trades lost, e.g. {sorted(missing)[:5]}"
    # Every injected fault was noticed and repaired; nothing is left unrepairable.
    assert {"id_jump", "reconnect"} <= {g[0] for g in gaps if g[1] == "repaired"}
    assert not [g for g in gaps if g[1] == "unrepairable"]

    result = build_bars(clickhouse, HOUR, HOUR_END, [(venue, s) for s in SYMBOLS])
    with clickhouse.session() as c:
        bars = c.query("SELECT exchange, symbol, toUnixTimestamp(minute), open, high, low, close, volume,"
                       " trade_count, complete FROM marketdata.bars_1m FINAL WHERE minute >= {a:DateTime}"
                       " AND minute < {b:DateTime} AND exchange = {v:String}",
                       parameters={"a": HOUR // 1_000_000, "b": HOUR_END // 1_000_000, "v": venue}).result_rows
    assert len(bars) == 60 * len(SYMBOLS), result
    got = {(b[0], b[1], b[2] * 1_000_000): (b[3], b[4], b[5], b[6], b[7], b[8]) for b in bars}
    want = bars_from_truth(truth)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], (k, got[k], want[k])
    assert all(b[9] == 1 for b in bars), "every minute of the hour is covered"
    audits = audit_hours(clickhouse, HOUR, HOUR_END, [(venue, s) for s in SYMBOLS])
    assert audits and all(a.passed for a in audits), audits

    # And through Dagster: the hour's partition materializes and its completeness check passes.
    import dagster as dg
    from marketdata.definitions import defs
    from marketdata.defs.bars.assets import bars_1m
    from marketdata.defs.bars.checks import bars_1m_complete
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", clickhouse.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(tmp_path / "marketdata.yaml"))
    res = dg.materialize([bars_1m, bars_1m_complete], resources=defs.resources,
                         instance=dg.DagsterInstance.ephemeral(), partition_key="2026-01-05-10:00")
    (ev,) = res.get_asset_check_evaluations()
    assert res.success and ev.passed, ev.metadata


def test_binance_without_repair_audit_names_exactly_the_gap_minutes(pipeline_factory, clickhouse):
    p = pipeline_factory(repair=False, rate=1500)
    p.wait_health("connections", 1)
    wait_for(lambda: p.sim_now() >= HOUR + 15 * US_PER_MINUTE, 60, "sim time 10:15")
    p.sim.fault("binance", kind="skip_ids", symbol="BTC-USDT", count=40)
    p.wait_health("gaps_unrepairable", 1)
    wait_for(lambda: p.sim_now() >= HOUR + 35 * US_PER_MINUTE, 60, "sim time 10:35")
    p.inject(kind="close")
    p.wait_health("reconnects", 1)
    p.wait_hour_persisted()

    with clickhouse.session() as c:
        gaps = c.query("SELECT symbol, from_us, to_us, found_by FROM marketdata.gaps FINAL "
                       "WHERE status = 'unrepairable'").result_rows
    assert {g[3] for g in gaps} >= {"id_jump"}
    touched = defaultdict(set)
    for sym, f, t, _ in gaps:
        for m in range(f // US_PER_MINUTE * US_PER_MINUTE, t + 1, US_PER_MINUTE):
            if HOUR <= m < HOUR_END:
                touched[("binance", sym)].add(m)
    build_bars(clickhouse, HOUR, HOUR_END, [("binance", s) for s in SYMBOLS])
    audits = audit_hours(clickhouse, HOUR, HOUR_END, [("binance", s) for s in SYMBOLS])
    assert not all(a.passed for a in audits)
    named = defaultdict(set)
    for a in audits:
        named[a.pair] |= {a.hour_start_us + m * US_PER_MINUTE for m in a.missing_offsets}
    assert named == touched
    # The skipped trades themselves fall in minutes the audit names.
    truth = read_truth(p.truth_path, HOUR, HOUR_END)
    with clickhouse.session() as c:
        have = {r[0] for r in c.query("SELECT trade_id FROM marketdata.ticks FINAL WHERE symbol = 'BTC-USDT'"
                                      ).result_rows}
    lost = [(ts // US_PER_MINUTE * US_PER_MINUTE) for tid, ts, *_ in truth[("binance", "BTC-USDT")]
            if tid not in have]
    assert len(lost) >= 40
    assert set(lost) <= named[("binance", "BTC-USDT")]
