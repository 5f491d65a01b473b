"""Bitfinex end to end, as real processes: simulator -> `marketdata ingest` -> Redis -> `marketdata
persist` -> ClickHouse -> bars_1m, the completeness audit and the Dagster check.

Inside the audited hour: the standard traps (silent drop, close, trades withheld -- on Bitfinex
only the SEQ_ALL sequence number shows the loss --, malformed frames, a frame on a chanId never
subscribed), then a 20051 restart notice and a maintenance window (20060 ... 20061). Every
reconnect draws new chanIds and replays the trades snapshot; every trade arrives as `te` and
again as `tu`. ClickHouse must hold exactly the ground truth, each trade once.
"""

from __future__ import annotations

import csv

import pytest

from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import HOUR, check_bars, check_dagster, check_ticks, pipeline_factory, standard_faults  # noqa: F401

pytestmark = pytest.mark.timeout(240)

# A long snapshot (the venue's is ~30 trades, a fraction of a second here) so that each replay
# reaches back over trades we already have, as it does in a quiet market.
SNAPSHOT = 1000
SIM_ARGS = ["--venue-option", "bitfinex.heartbeat_interval=0.5", "--venue-option", "bitfinex.tu_delay=0.5",
            "--venue-option", f"bitfinex.snapshot_size={SNAPSHOT}"]


def _truth_rows(path) -> int:
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def test_bitfinex_end_to_end_with_faults_matches_ground_truth(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(repair=True, venue="bitfinex", sim_args=SIM_ARGS, options={}, rate=1000, speed=120)
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")

    faults = standard_faults(p)       # its skip_ids gap is found by the sequence number only
    reconnects = p.health("reconnects")
    assert reconnects >= 3, "the lost frames were noticed (sequence jump) and the link replaced"

    faults.append(p.inject(kind="notice", code=20051))
    p.wait_health("reconnects", reconnects + 1)
    p.wait_health("connections", 1)

    # Maintenance: the link is paused, not hammered with reconnects; 20061 replaces it once.
    before = p.health("reconnects")
    repaired = p.health("gaps_repaired")
    faults.append(p.inject(kind="notice", code=20060, duration=4))
    wait_for(lambda: p.sim.stats("bitfinex")["bitfinex"]["maintenance"] is False, 30, "maintenance over")
    p.wait_health("reconnects", before + 1)
    p.wait_health("gaps_repaired", repaired + 2)       # the window, per symbol, from REST
    assert p.health("reconnects") == before + 1, p.ingest.log(100)
    assert all(HOUR <= f["sim_time_us"] < p.hour_end for f in faults), "faults must land inside the hour"

    p.wait_hour_persisted()
    p.sim.control("bitfinex", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert "bitfinex: malformed frame skipped" in p.ingest.log(2000)

    # te and tu are one trade: ticks read off the socket never exceed the trades the venue made
    # plus the snapshots replayed on each subscribe; the replays were recognised, not republished.
    subscribes = (p.health("reconnects") + 1) * len(p.symbols)
    assert p.health("ticks_in") <= _truth_rows(p.truth_path) + SNAPSHOT * subscribes, p.health("ticks_in")
    assert p.health("duplicates") > 0, "replayed trades we had were recognised"

    got = check_ticks(p, clickhouse)
    found = {g[1] for g in got["gaps"] if g[2] == "repaired"}
    assert {"reconnect", "maintenance"} <= found, got["gaps"]
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)
