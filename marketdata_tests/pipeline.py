"""The whole path for one venue as real processes -- simulator -> `marketdata ingest` -> Redis ->
`marketdata persist` -> ClickHouse -- and the checks every per-venue end-to-end test makes against
the simulator's ground truth: ticks, bars, the completeness audit and the Dagster check.

A venue's test (``test_e2e_<venue>.py``) builds a `Pipeline` with its simulator arguments and
connector options, triggers its traps, then calls `check_ticks`, `check_bars` and `check_dagster`.
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
# Simulated minutes before the audited hour: time for the connector to start and subscribe on a
# loaded machine (10 min = 5 s of wall time at speed 120).
LEAD_MINUTES = 10
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

    def __init__(self, tmp: Path, redis_url: str, ch, *, repair: bool = True, rate: int = 2000,
                 venue: str = "binance", sim_args: list[str] | None = None, options: dict | None = None,
                 venue_config: dict | None = None, symbols: list[str] | None = None, seed: int = 11,
                 hour: int = HOUR, speed: float = SPEED, env: dict | None = None, hold: bool = True,
                 consumer: str = "e2e"):
        """hold: the simulator's clock stands at the lead-in until the connector has subscribed every
        symbol (False for a connector that cannot subscribe, e.g. refused credentials)."""
        self.tmp, self.ch, self.venue = tmp, ch, venue
        self.hour, self.hour_end = hour, hour + US_PER_HOUR    # the audited hour
        self.symbols = symbols = symbols or SYMBOLS
        sim_args = SIM_ARGS.get(venue, []) if sim_args is None else sim_args
        options = VENUE_OPTIONS.get(venue, {}) if options is None else options
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.truth_path = tmp / "truth.csv"
        env = {**platform_env(tmp, redis_url, ch.url), **(env or {})}     # env: e.g. venue API keys
        self.sim = SimProc(["simulate", "--venues", venue, "--symbols", ",".join(symbols), *sim_args,
                            "--rate", str(rate), "--seed", str(seed), "--start", _iso(hour - LEAD_MINUTES * US_PER_MINUTE),
                            "--speed", str(speed), "--end", _iso(self.hour_end + 2 * US_PER_MINUTE),
                            "--ping-interval", "1", "--pong-timeout", "5",
                            "--ground-truth", str(self.truth_path),
                            *(["--paused", "--hold-clock"] if hold else [])], env, self.logs)
        eps = self.sim.endpoints[venue]
        cfg = write_config(tmp / "marketdata.yaml", {venue: {
            "symbols": symbols, "ws_url": eps["ws"], "rest_url": eps["rest"], "repair": repair,
            "idle_timeout": 2.5, "options": options, **(venue_config or {})}})
        env["MARKETDATA_CONFIG"] = str(cfg)
        self.env = env
        self.consumer = consumer
        self.persist, self.ingest = self.start_platform(env)
        self.r = client(redis_url)
        if hold:
            self.wait_health("subscribed_symbols", len(symbols), timeout=90)
            self.sim.control(venue, "/_sim/resume", {})

    def start_platform(self, env: dict) -> tuple[Proc, Proc]:
        """What runs behind the simulator: (the persist side, the connector side). Here one
        `marketdata persist` and one `marketdata ingest`; test_up_split.py runs two `up --only`."""
        return (Proc("persist", ["persist", "--consumer", self.consumer], env, self.logs),
                Proc("ingest", ["ingest", "--venue", self.venue], env, self.logs))

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
        self.wait_health("covered_to_us", self.hour_end + 30 * 1_000_000, timeout)

        def covered() -> bool:
            rows = self.ch.rows(
                "SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = {v:String} GROUP BY symbol",
                {"v": self.venue})
            return len(rows) == len(self.symbols) and all(t >= self.hour_end for _, t in rows)
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




def unrepairable_spans(ch, venue: str) -> dict[str, list[tuple[int, int]]]:
    """symbol -> [(from_us, to_us)] of the gaps recorded unrepairable."""
    out: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with ch.session() as c:
        for sym, f, t in c.query("SELECT symbol, from_us, to_us FROM marketdata.gaps FINAL WHERE exchange = {v:String}"
                                 " AND status = 'unrepairable'", parameters={"v": venue}).result_rows:
            out[sym].append((f, t))
    return out


def check_ticks(p: Pipeline, ch, *, allow_unrepairable: bool = False, min_trades: int = 20_000) -> dict:
    """ClickHouse's ticks for the hour equal the ground truth: every tick is fills the venue made
    (a tick covers ids tradeId-count+1 .. tradeId; count > 1 only for venue aggregates), none is
    stored twice, none is lost -- except, with `allow_unrepairable`, trades inside a gap recorded
    unrepairable (and then only there). Returns the truth, the gap rows and the lost trades."""
    venue = p.venue
    truth = {k: v for k, v in read_truth(p.truth_path, p.hour, p.hour_end).items() if k[0] == venue}
    assert sum(len(v) for v in truth.values()) > min_trades
    with ch.session() as c:
        rows = c.query("SELECT exchange, symbol, trade_id, trade_count, ts_us, toString(close), toString(volume), side"
                       " FROM marketdata.ticks FINAL WHERE exchange = {v:String}"
                       " AND ts_us >= {a:Int64} AND ts_us < {b:Int64}",
                       parameters={"v": venue, "a": p.hour, "b": p.hour_end}).result_rows
        gaps = c.query("SELECT symbol, found_by, status, from_us, to_us FROM marketdata.gaps FINAL"
                       " WHERE exchange = {v:String}", parameters={"v": venue}).result_rows
    fills = {(ex, sym, tid): (ts, px, qty, side) for (ex, sym), trades in truth.items()
             for tid, ts, px, qty, side in trades}
    sequential = all(tid.isdigit() for (_, _, tid) in fills)
    covered: list = []
    for ex, sym, tid, count, ts, px, qty, side in rows:
        ids = ([(ex, sym, str(i)) for i in range(int(tid) - count + 1, int(tid) + 1)]
               if count > 1 and sequential else [(ex, sym, tid)])
        covered += ids
        parts = [fills.get(i) for i in ids]
        assert all(parts), f"tick {tid} covers fills the venue never made"
        assert {(f[0], f[1], f[3]) for f in parts} == {(ts, Decimal(px), side)}, tid
        assert sum(f[2] for f in parts) == Decimal(qty), tid
    assert len(covered) == len(set(covered)), "a fill is stored twice"
    missing = fills.keys() - set(covered)
    if not allow_unrepairable:
        assert not missing, f"{len(missing)} trades lost, e.g. {sorted(missing)[:5]}"
        assert not [g for g in gaps if g[2] == "unrepairable"], gaps
    else:
        spans = unrepairable_spans(ch, venue)
        outside = [k for k in missing if not any(f <= fills[k][0] <= t for f, t in spans.get(k[1], []))]
        assert not outside, f"{len(outside)} trades lost outside any unrepairable gap, e.g. {sorted(outside)[:5]}"
    return {"truth": truth, "gaps": gaps, "missing": missing}


def check_bars(p: Pipeline, ch, truth: dict, *, expect_complete: bool = True) -> list:
    """bars_1m for the hour equal bars computed from the ground truth (minus trades lost in
    unrepairable gaps), and the completeness audit passes -- or, when gaps were unrepairable,
    names exactly the minutes they touch. Returns the audits."""
    venue, pairs = p.venue, [(p.venue, s) for s in p.symbols]
    build_bars(ch, p.hour, p.hour_end, pairs)
    with ch.session() as c:
        bars = c.query("SELECT exchange, symbol, toUnixTimestamp(minute), open, high, low, close, volume,"
                       " trade_count, complete FROM marketdata.bars_1m FINAL WHERE minute >= {a:DateTime}"
                       " AND minute < {b:DateTime} AND exchange = {v:String}",
                       parameters={"a": p.hour // 1_000_000, "b": p.hour_end // 1_000_000, "v": venue}).result_rows
        stored = {(r[0], r[1]) for r in c.query(
            "SELECT symbol, trade_id FROM marketdata.ticks FINAL WHERE exchange = {v:String}",
            parameters={"v": venue}).result_rows}
    assert len(bars) == 60 * len(p.symbols)
    got = {(b[0], b[1], b[2] * 1_000_000): (b[3], b[4], b[5], b[6], b[7], b[8]) for b in bars}
    spans = unrepairable_spans(ch, venue)
    if spans:   # bars are what was stored: drop the lost trades from the truth
        truth = {k: [t for t in v if (k[1], t[0]) in stored or not any(
            f <= t[1] <= e for f, e in spans.get(k[1], []))] for k, v in truth.items()}
    want = bars_from_truth(truth)
    assert got.keys() >= want.keys()
    for k in want:
        assert got[k] == want[k], (k, got[k], want[k])
    # the audit covers every pair with data; other venues sharing the database are not this check's
    audits = [a for a in audit_hours(ch, p.hour, p.hour_end, pairs) if a.pair in pairs]
    touched: dict = defaultdict(set)
    for sym, lst in spans.items():
        for f, t in lst:
            for m in range(f // US_PER_MINUTE * US_PER_MINUTE, t + 1, US_PER_MINUTE):
                if p.hour <= m < p.hour_end:
                    touched[(venue, sym)].add(m)
    named: dict = defaultdict(set)
    for a in audits:
        if a.missing_offsets:
            named[a.pair] |= {a.hour_start_us + m * US_PER_MINUTE for m in a.missing_offsets}
    assert dict(named) == dict(touched), (named, touched)
    if expect_complete:
        assert all(b[9] == 1 for b in bars), "every minute of the hour is covered"
        assert audits and all(a.passed for a in audits), audits
    return audits


def check_dagster(p: Pipeline, monkeypatch, *, expect_pass: bool = True) -> None:
    """Through Dagster: the hour's partition materializes and its completeness check agrees."""
    import dagster as dg
    from marketdata.definitions import defs
    from marketdata.defs.bars.assets import bars_1m
    from marketdata.defs.bars.checks import bars_1m_complete
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", p.ch.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(p.tmp / "marketdata.yaml"))
    res = dg.materialize([bars_1m, bars_1m_complete], resources=defs.resources,
                         instance=dg.DagsterInstance.ephemeral(),
                         partition_key=datetime.fromtimestamp(p.hour / 1e6, tz=timezone.utc).strftime("%Y-%m-%d-%H:%M"))
    (ev,) = res.get_asset_check_evaluations()
    assert res.success and ev.passed == expect_pass, ev.metadata


def standard_faults(p: Pipeline, *, skip_ids: bool = True) -> list[dict]:
    """The skeleton's traps inside the audited hour: a silent drop, a close, (a trade-id gap),
    malformed frames and an unknown symbol. Returns the faults as the simulator applied them."""
    venue = p.venue
    faults = [p.inject(kind="silent_drop")]
    p.wait_health("reconnects", 1)
    faults.append(p.inject(kind="close"))
    p.wait_health("reconnects", 2)
    p.wait_health("connections", 1)
    if skip_ids:
        faults.append(p.sim.fault(venue, kind="skip_ids", symbol=p.symbols[0], count=25)["fault"])
        p.wait_health("gaps_repaired", p.health("gaps_repaired") + 1)
    faults.append(p.inject(kind="malformed", count=3))
    faults.append(p.inject(kind="unknown_symbol"))
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert all(p.hour <= f["sim_time_us"] < p.hour_end for f in faults), \
        "faults must land inside the audited hour (machine too slow?)"
    return faults
