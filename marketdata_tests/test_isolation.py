"""Venues are isolated: under `marketdata up`, one venue's connector crashing in a loop, stalling or
being rate limited leaves the others at their rate and complete.

`marketdata up --no-dagster` runs the simulator, one connector per venue and a persist worker on the
test's Redis and ClickHouse. During the audited hour the test SIGKILLs one venue's connector every
time the supervisor brings it back. Meanwhile every other venue must receive trades as fast as the
simulator makes them, and afterwards hold exactly the ground truth with every bar complete. The
crashing venue itself must catch up from REST once the loop ends (its restarts are repaired gaps).

With all ten venues the test also stalls one connector (SIGSTOP, then SIGCONT), rate limits one
venue's REST (429s) while it repairs, and injects seeded random connection faults on every venue.
Venues whose REST can give the lost trades back end equal to the ground truth; the others (KuCoin's
last 100, Bybit's recent 60, Bitstamp's none) record unrepairable gaps exactly at the injected
faults, and the completeness audit names exactly the minutes those gaps touch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from marketdata.clock import US_PER_HOUR, US_PER_MINUTE
from marketdata.procs import default_signals
from marketdata.storage.redis import client
from marketdata.stream import health_key

from .harness import REPO, wait_for
from .pipeline import HOUR, LEAD_MINUTES, _iso, check_bars, check_ticks, unrepairable_spans

VENUES = ["binance", "okx", "kucoin", "kraken"]
VICTIM = "binance"
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
RATE = 600          # trades per wall second per venue
SPEED = 60          # one simulated hour in 60 wall seconds
KILLS = 4
LOOP_SECONDS = 15   # wall seconds of crash loop over which the others' rate is measured

TEN = ["binance", "okx", "kucoin", "kraken", "coinbase", "bybit", "bitfinex", "gateio", "bitstamp", "alpaca"]
TEN_SYMBOLS = {**{v: ["BTC-USD", "ETH-USD"] for v in ("kraken", "coinbase", "bitfinex", "bitstamp")},
               "alpaca": ["AAPL-USD", "MSFT-USD"]}
TEN_RATE = 200
TEN_HOUR = int(datetime(2026, 1, 5, 15, tzinfo=timezone.utc).timestamp() * 1_000_000)   # 10:00 ET, NYSE open
STALLED = "kraken"
RATE_LIMITED = "coinbase"
# REST cannot restore these venues' holes: KuCoin returns the last 100 trades, Bybit the last 60,
# Bitstamp no tape at all.
UNREPAIRABLE = {"kucoin", "bybit", "bitstamp"}
SEQUENTIAL = {"binance", "okx", "kraken", "coinbase", "bitfinex", "gateio"}   # skip_ids is seen as a jump


def _symbols(venue: str) -> list[str]:
    return TEN_SYMBOLS.get(venue, SYMBOLS)


@dataclass
class VenueRun:
    """What the pipeline checks need to know about one venue of the run."""
    venue: str
    symbols: list
    truth_path: Path
    ch: object
    hour: int = HOUR
    hour_end: int = HOUR + US_PER_HOUR


def _venue_config(name: str) -> dict:
    cfg = {"symbols": _symbols(name), "idle_timeout": 5}
    if name == "okx":
        cfg["options"] = {"ping_interval": 5.0}
    return cfg


class Up:
    """`marketdata up --no-dagster` on the test's Redis and ClickHouse, and what the test reads of it."""

    def __init__(self, tmp_path: Path, redis_url: str, clickhouse, venues: list[str], simulator: dict):
        self.tmp, self.home, self.venues = tmp_path, tmp_path / "home", venues
        cfg = tmp_path / "marketdata.yaml"
        cfg.write_text(yaml.safe_dump({"endpoints": "simulator",
                                       "venues": {v: _venue_config(v) for v in venues},
                                       # the checks compare ClickHouse with the simulator's record,
                                       # and repairs may reach back to the start of the run
                                       "simulator": {**simulator, "ground_truth": True,
                                                     "history_minutes": None}}))
        # No venue keys from the developer's shell: `up` must bring its own demo keys (Alpaca).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_", "APCA_"))}
        env.update(MARKETDATA_HOME=str(self.home), MARKETDATA_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
                   MARKETDATA_REDIS_URL=redis_url, MARKETDATA_CLICKHOUSE_URL=clickhouse.url)
        self.out = open(tmp_path / "up.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "marketdata.cli", "up", "--no-dagster"], env=env,
                                     cwd=str(REPO), stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=default_signals)
        self.procs_file = self.home / "run" / "processes.json"
        self.truth_path = self.home / "simulator" / "ground_truth.csv"
        self.ch = clickhouse
        self.r = client(redis_url)
        self.endpoints: dict = {}

    def diagnostics(self) -> str:
        logs = self.home / "logs"
        parts = [(self.tmp / "up.log").read_text(errors="replace")[-3000:]]
        for f in sorted(logs.glob("*.log")) if logs.exists() else []:
            parts.append(f"--- {f.name} ---\n" + f.read_text(errors="replace")[-2500:])
        return "\n".join(parts)

    def health(self, venue: str, field: str) -> int:
        v = self.r.hget(health_key(venue), field)
        return int(v) if v is not None else 0

    def counts(self, venues: list[str], field: str) -> dict[str, tuple[int, float]]:
        """venue -> (field, when it was written): each read just after the connector's once-a-second
        health write, so a rate over a few seconds is not off by a second's worth of ticks."""
        first = {v: self.health(v, field) for v in venues}
        out: dict[str, tuple[int, float]] = {}

        def fresh():
            for v in venues:
                if v not in out and (n := self.health(v, field)) != first[v]:
                    out[v] = (n, time.monotonic())
            return len(out) == len(venues)
        wait_for(fresh, 30, f"fresh {field} of {venues}", interval=0.05, on_timeout=self.diagnostics)
        return out

    def rates(self, since: dict[str, tuple[int, float]], field: str = "ticks_in") -> dict[str, float]:
        now = self.counts(list(since), field)
        return {v: (now[v][0] - since[v][0]) / (now[v][1] - since[v][1]) for v in since}

    def children(self) -> dict:
        return orjson.loads(self.procs_file.read_bytes())["children"]

    def wait_started(self) -> None:
        wait_for(self.procs_file.exists, 120, "up to start its processes", on_timeout=self.diagnostics)
        for v in self.venues:
            wait_for(lambda v=v: self.health(v, "connections") >= 1, 90, f"{v} connected",
                     on_timeout=self.diagnostics)
        self.endpoints = orjson.loads((self.home / "simulator" / "endpoints.json").read_bytes())

    def sim(self, venue: str, path: str, body: dict | None = None) -> dict:
        url = self.endpoints[venue]["rest"] + path
        r = httpx.post(url, json=body, timeout=10) if body is not None else httpx.get(url, timeout=10)
        r.raise_for_status()
        return r.json()

    def inject(self, venue: str, **fault) -> dict:
        """A fault, retried until the simulator applied it to an open connection (when it is one)."""
        def attempt():
            f = self.sim(venue, "/_sim/fault", fault)["fault"]
            return f if f["applied_to"] or fault["kind"] == "skip_ids" else None
        return wait_for(attempt, 30, f"{venue} {fault['kind']} applied", interval=0.2, on_timeout=self.diagnostics)

    def crash_loop(self, victim: str, kills: int, seconds: float) -> list[int]:
        """SIGKILL the victim's connector each time the supervisor restarts it, `kills` times and for
        at least `seconds`."""
        t0 = time.monotonic()
        killed: list[int] = []
        while len(killed) < kills or time.monotonic() - t0 < seconds:
            def alive_pid():
                c = self.children()[f"ingest-{victim}"]
                return c["pid"] if c["pid"] and c["pid"] not in killed else None
            pid = wait_for(alive_pid, 60, f"{victim} connector to be restarted", interval=0.1,
                           on_timeout=self.diagnostics)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        wait_for(lambda: self.children()[f"ingest-{victim}"]["restarts"] >= len(killed), 30,
                 "the supervisor to count every crash", on_timeout=self.diagnostics)
        return killed

    def wait_hour_persisted(self, hour_end: int) -> None:
        for v in self.venues:
            wait_for(lambda v=v: self.health(v, "covered_to_us") >= hour_end + 30_000_000, 180,
                     f"{v} coverage past the hour", on_timeout=self.diagnostics)

        def persisted(v):
            rows = self.ch.rows("SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = {v:String}"
                                " GROUP BY symbol", {"v": v})
            return len(rows) == len(_symbols(v)) and all(t >= hour_end for _, t in rows)
        for v in self.venues:
            wait_for(lambda v=v: persisted(v), 120, f"{v} coverage in ClickHouse", interval=0.5,
                     on_timeout=self.diagnostics)

    def stop(self) -> None:
        self.r.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.out.close()


def _floor(venue: str, rate: float) -> float:
    # Each venue offers `rate` trades/s; aggregating venues (OKX) deliver fewer, larger ticks.
    return 0.9 * rate * (0.45 if venue == "okx" else 1.0)


@pytest.mark.parametrize("venues", [VENUES], ids=["four"])
def test_one_venue_crashing_in_a_loop_leaves_the_others_complete(venues, tmp_path, redis_server, clickhouse):
    up = Up(tmp_path, redis_server.url, clickhouse, venues,
            {"rate": RATE, "seed": 5, "speed": SPEED, "start": _iso(HOUR - LEAD_MINUTES * US_PER_MINUTE),
             "ping_interval": 2, "pong_timeout": 10})
    try:
        up.wait_started()
        others = [v for v in venues if v != VICTIM]
        # sim time, from the covered-to marks the healthy connectors publish
        wait_for(lambda: min(up.health(v, "covered_to_us") for v in others) >= HOUR + 3 * US_PER_MINUTE, 90,
                 "the audited hour to be under way", on_timeout=up.diagnostics)

        # The crash loop, while the others are watched for their rate.
        start_in = up.counts(others, "ticks_in")
        up.crash_loop(VICTIM, KILLS, LOOP_SECONDS)
        rates = up.rates(start_in)
        floor = {v: _floor(v, RATE) for v in others}
        assert all(rates[v] >= floor[v] for v in others), (rates, floor)
        assert up.proc.poll() is None, up.diagnostics()

        up.wait_hour_persisted(HOUR + US_PER_HOUR)
        for v in venues:
            run = VenueRun(v, _symbols(v), up.truth_path, clickhouse)
            got = check_ticks(run, clickhouse, min_trades=5_000)
            check_bars(run, clickhouse, got["truth"])
        assert up.health(VICTIM, "gaps_repaired") >= 1
    finally:
        up.stop()


# --- all ten venues --------------------------------------------------------------------------------
TEN_KILLS = 3
STALL_SECONDS = 6
SEED = 10


def _fault_plan(rng: random.Random) -> dict[str, list[str]]:
    """Two seeded connection faults per venue, from those that apply to it. KuCoin and Bybit get
    silent drops only: a close's short hole may or may not fit in their last 100 / 60 trades, so its
    outcome would depend on the machine's speed; a silent drop (5 s of trades) never fits."""
    plan = {}
    for v in TEN:
        if v in ("kucoin", "bybit"):
            kinds = ["silent_drop"]
        else:
            kinds = ["silent_drop", "close", "abort"] + (["skip_ids"] if v in SEQUENTIAL else [])
        plan[v] = [rng.choice(kinds) for _ in range(2)]
    # The rate-limited venue must need REST right after its 429s are armed: a silent drop always does.
    plan[RATE_LIMITED][0] = "silent_drop"
    return plan


def _at(f: int, t: int, drop_us: int) -> bool:
    """A gap [f, t] is the one a drop at `drop_us` made: it starts at the last trade before the
    drop (a few simulated seconds earlier; a close frame may trail a slice of trades) and spans it."""
    return f - 10_000_000 <= drop_us <= t and drop_us - f < US_PER_MINUTE


def _fault_round(up: Up, kinds: dict[str, str]) -> list[tuple[str, dict]]:
    """One fault on every venue at once, then wait until each venue has noticed its own."""
    before = {v: (up.health(v, "reconnects"), up.health(v, "gaps_repaired")) for v in kinds}
    applied = []
    for v, kind in kinds.items():
        extra = {"symbol": _symbols(v)[0], "count": 25} if kind == "skip_ids" else {}
        applied.append((v, up.inject(v, kind=kind, **extra)))
    for v, kind in kinds.items():
        if kind == "skip_ids":
            wait_for(lambda v=v: up.health(v, "gaps_repaired") > before[v][1], 60, f"{v} id gap repaired",
                     on_timeout=up.diagnostics)
        else:
            wait_for(lambda v=v: up.health(v, "reconnects") > before[v][0], 60, f"{v} reconnected after {kind}",
                     on_timeout=up.diagnostics)
    for v in kinds:
        wait_for(lambda v=v: up.health(v, "connections") >= 1, 60, f"{v} connected", on_timeout=up.diagnostics)
    return applied


@pytest.mark.timeout(480)
def test_ten_venues_with_a_crash_loop_a_stall_a_rate_limit_and_random_faults(tmp_path, redis_server, clickhouse):
    hour_end = TEN_HOUR + US_PER_HOUR
    up = Up(tmp_path, redis_server.url, clickhouse, TEN,
            {"rate": TEN_RATE, "seed": SEED, "speed": SPEED, "start": _iso(TEN_HOUR - 10 * US_PER_MINUTE),
             "ping_interval": 2, "pong_timeout": 10})
    stalled_pid = None
    try:
        up.wait_started()
        others = [v for v in TEN if v not in (VICTIM, STALLED)]
        wait_for(lambda: min(up.health(v, "covered_to_us") for v in others) >= TEN_HOUR + 3 * US_PER_MINUTE, 90,
                 "the audited hour to be under way", on_timeout=up.diagnostics)

        # One connector frozen and one crashing in a loop, while the other eight are watched for their rate.
        start_in = up.counts(others, "ticks_in")
        stalled_in = up.health(STALLED, "ticks_in")
        stalled_pid = up.children()[f"ingest-{STALLED}"]["pid"]
        os.kill(stalled_pid, signal.SIGSTOP)
        resume = threading.Timer(STALL_SECONDS, os.kill, (stalled_pid, signal.SIGCONT))
        resume.start()
        # Few kills: the supervisor's backoff doubles with each, and the victim must be back for the faults.
        up.crash_loop(VICTIM, TEN_KILLS, 0)
        resume.join()
        rates = up.rates(start_in)
        floor = {v: _floor(v, TEN_RATE) for v in others}
        assert all(rates[v] >= floor[v] for v in others), (rates, floor)
        wait_for(lambda: up.health(STALLED, "ticks_in") > stalled_in + TEN_RATE, 30, f"{STALLED} to resume",
                 on_timeout=up.diagnostics)
        assert up.proc.poll() is None, up.diagnostics()

        # Seeded random faults on every venue; the rate-limited venue's REST answers 429 while it repairs.
        plan = _fault_plan(random.Random(SEED))
        up.sim(RATE_LIMITED, "/_sim/fault", {"kind": "rest_fail", "status": 429, "count": 3, "retry_after": 1})
        repaired = up.health(RATE_LIMITED, "gaps_repaired")
        faults = _fault_round(up, {v: kinds[0] for v, kinds in plan.items()})
        wait_for(lambda: up.sim(RATE_LIMITED, "/_sim/stats")["rest"]["failed"] == 3, 60,
                 f"{RATE_LIMITED} to be served the 429s", on_timeout=up.diagnostics)
        wait_for(lambda: up.health(RATE_LIMITED, "gaps_repaired") > repaired, 60,
                 f"{RATE_LIMITED} to repair past the 429s", on_timeout=up.diagnostics)
        faults += _fault_round(up, {v: kinds[1] for v, kinds in plan.items()})
        at = [(v, f["kind"], (f["sim_time_us"] - TEN_HOUR) / US_PER_MINUTE) for v, f in faults]
        assert all(0 <= m < 60 for _, _, m in at), f"faults must land inside the audited hour (machine too slow?): {at}"

        up.wait_hour_persisted(hour_end)
        for v in TEN:
            run = VenueRun(v, _symbols(v), up.truth_path, clickhouse, hour=TEN_HOUR, hour_end=hour_end)
            if v not in UNREPAIRABLE:
                got = check_ticks(run, clickhouse, min_trades=5_000)
                check_bars(run, clickhouse, got["truth"])
                continue
            got = check_ticks(run, clickhouse, allow_unrepairable=True, min_trades=5_000)
            assert got["missing"], f"{v}: a drop loses trades REST cannot give back"
            drops = [f["sim_time_us"] for fv, f in faults if fv == v]
            spans = {s: [(f, t) for f, t in lst if t >= TEN_HOUR and f < hour_end]
                     for s, lst in unrepairable_spans(clickhouse, v).items()}
            for d in drops:     # every injected drop left an unrepairable gap on every symbol ...
                assert all(any(_at(f, t, d) for f, t in spans.get(s, [])) for s in run.symbols), (v, d, spans)
            for s, lst in spans.items():    # ... and there is no other
                assert all(any(_at(f, t, d) for d in drops) for f, t in lst), (v, s, lst, drops)
            # bars equal the stored trades, and the audit names exactly the minutes the gaps touch
            audits = check_bars(run, clickhouse, got["truth"], expect_complete=False)
            assert not all(a.passed for a in audits), v
        assert up.health(VICTIM, "gaps_repaired") >= 1
        assert up.health("alpaca", "ticks_in") > 0, "alpaca authenticated with up's demo keys"
    finally:
        if stalled_pid:
            try:
                os.kill(stalled_pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        up.stop()
