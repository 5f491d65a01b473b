"""Venues are isolated: under `marketdata up`, one venue's connector crashing in a loop leaves the
others at their rate and complete.

`marketdata up --no-dagster` runs the simulator, one connector per venue and a persist worker on the
test's Redis and ClickHouse. During the audited hour the test SIGKILLs one venue's connector every
time the supervisor brings it back. Meanwhile every other venue must receive trades as fast as the
simulator makes them, and afterwards hold exactly the ground truth with every bar complete. The
crashing venue itself must catch up from REST once the loop ends (its restarts are repaired gaps).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from marketdata.clock import US_PER_HOUR, US_PER_MINUTE
from marketdata.procs import default_signals
from marketdata.storage.redis import client
from marketdata.stream import health_key

from .harness import REPO, wait_for
from .pipeline import HOUR, _iso, check_bars, check_ticks

VENUES = ["binance", "okx", "kucoin", "kraken"]
VICTIM = "binance"
SYMBOLS = ["BTC-USDT", "ETH-USDT"]
RATE = 600          # trades per wall second per venue
SPEED = 60          # one simulated hour in 60 wall seconds
KILLS = 4
LOOP_SECONDS = 15   # wall seconds of crash loop over which the others' rate is measured


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
    cfg = {"symbols": SYMBOLS, "idle_timeout": 5}
    if name == "okx":
        cfg["options"] = {"ping_interval": 5.0}
    return cfg


@pytest.mark.parametrize("venues", [VENUES], ids=["four"])
def test_one_venue_crashing_in_a_loop_leaves_the_others_complete(venues, tmp_path, redis_server, clickhouse):
    home = tmp_path / "home"
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text(yaml.safe_dump({
        "endpoints": "simulator",
        "venues": {v: _venue_config(v) for v in venues},
        "simulator": {"rate": RATE, "seed": 5, "speed": SPEED, "start": _iso(HOUR - 2 * US_PER_MINUTE),
                      "ping_interval": 2, "pong_timeout": 10},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_"))}
    env.update(MARKETDATA_HOME=str(home), MARKETDATA_CONFIG=str(cfg), PYTHONUNBUFFERED="1",
               MARKETDATA_REDIS_URL=redis_server.url, MARKETDATA_CLICKHOUSE_URL=clickhouse.url)
    out = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "marketdata.cli", "up", "--no-dagster"], env=env, cwd=str(REPO),
                          stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          start_new_session=True, preexec_fn=default_signals)
    procs_file = home / "run" / "processes.json"
    logs = home / "logs"

    def diagnostics() -> str:
        parts = [(tmp_path / "up.log").read_text(errors="replace")[-3000:]]
        for f in sorted(logs.glob("*.log")) if logs.exists() else []:
            parts.append(f"--- {f.name} ---\n" + f.read_text(errors="replace")[-2500:])
        return "\n".join(parts)

    r = client(redis_server.url)

    def health(venue: str, field: str) -> int:
        v = r.hget(health_key(venue), field)
        return int(v) if v is not None else 0

    def children() -> dict:
        return orjson.loads(procs_file.read_bytes())["children"]

    try:
        wait_for(procs_file.exists, 120, "up to start its processes", on_timeout=diagnostics)
        for v in venues:
            wait_for(lambda v=v: health(v, "connections") >= 1, 60, f"{v} connected", on_timeout=diagnostics)
        truth_path = home / "simulator" / "ground_truth.csv"
        # sim time, from the covered-to marks the healthy connectors publish
        others = [v for v in venues if v != VICTIM]
        wait_for(lambda: min(health(v, "covered_to_us") for v in others) >= HOUR + 3 * US_PER_MINUTE, 90,
                 "the audited hour to be under way", on_timeout=diagnostics)

        # The crash loop, while the others are watched for their rate.
        start_in = {v: health(v, "ticks_in") for v in others}
        t0 = time.monotonic()
        killed: list[int] = []
        while len(killed) < KILLS or time.monotonic() - t0 < LOOP_SECONDS:
            def alive_pid():
                c = children()[f"ingest-{VICTIM}"]
                return c["pid"] if c["pid"] and c["pid"] not in killed else None
            pid = wait_for(alive_pid, 60, f"{VICTIM} connector to be restarted", interval=0.1,
                           on_timeout=diagnostics)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        elapsed = time.monotonic() - t0
        rates = {v: (health(v, "ticks_in") - start_in[v]) / elapsed for v in others}
        # Each venue offers RATE trades/s; aggregating venues (OKX) deliver fewer, larger ticks.
        floor = {v: 0.9 * RATE * (0.45 if v == "okx" else 1.0) for v in others}
        assert all(rates[v] >= floor[v] for v in others), (rates, floor)
        wait_for(lambda: children()[f"ingest-{VICTIM}"]["restarts"] >= len(killed), 30,
                 "the supervisor to count every crash", on_timeout=diagnostics)
        assert up.poll() is None, diagnostics()

        for v in venues:
            wait_for(lambda v=v: health(v, "covered_to_us") >= HOUR + US_PER_HOUR + 30_000_000, 180,
                     f"{v} coverage past the hour", on_timeout=diagnostics)

        def persisted(v):
            rows = clickhouse.rows("SELECT symbol, max(to_us) FROM marketdata.coverage WHERE exchange = {v:String}"
                                   " GROUP BY symbol", {"v": v})
            return len(rows) == len(SYMBOLS) and all(t >= HOUR + US_PER_HOUR for _, t in rows)
        for v in venues:
            wait_for(lambda v=v: persisted(v), 120, f"{v} coverage in ClickHouse", interval=0.5,
                     on_timeout=diagnostics)
        for v in venues:
            run = VenueRun(v, SYMBOLS, truth_path, clickhouse)
            got = check_ticks(run, clickhouse, min_trades=5_000)
            check_bars(run, clickhouse, got["truth"])
        assert health(VICTIM, "gaps_repaired") >= 1
    finally:
        r.close()
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        out.close()
