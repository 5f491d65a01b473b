"""Bitstamp end to end, as real processes: simulator -> `marketdata ingest` -> Redis -> persist ->
ClickHouse -> bars_1m -> Dagster check, one simulated hour.

Bitstamp's traps: `bts:request_reconnect` (the venue closes the link a few seconds later) must be
answered make-before-break -- three of them leave no reconnect span at all; a newer market's trade
ids (SOL-USD) are beyond 2^53, so only `id_str` is exact, while a legacy pair's (BTC-USD) are small; REST cannot give a hole back (µs tape vs a seconds window), so
the connector runs two links and a dropped one loses nothing. An unlisted pair, which the venue
would acknowledge and then leave silent, fails the start instead."""

from __future__ import annotations

import asyncio

import pytest

from marketdata.clock import US_PER_MINUTE
from marketdata.config import VenueConfig
from marketdata.errors import ConfigError
from marketdata.ingest.connector import VenueConnector
from marketdata.simulator import Simulator, SimulatorConfig

from .harness import wait_for
from .pipeline import HOUR, check_bars, check_dagster, check_ticks, pipeline_factory  # noqa: F401

pytestmark = pytest.mark.timeout(240)

SYMBOLS = ["BTC-USD", "SOL-USD"]      # a legacy pair (small ids) and a newer one (ids > 2^53)


def _open_conn(p) -> int:
    def first():
        conns = [c["conn"] for c in p.sim.stats("bitstamp")["connections"] if c["state"] == "open"]
        return (min(conns),) if len(conns) == 2 else None
    return wait_for(first, 30, "two open bitstamp links", on_timeout=p.diagnostics)[0]


def test_bitstamp_end_to_end_request_reconnects_rotate_and_ids_stay_exact(pipeline_factory, clickhouse,
                                                                          monkeypatch):
    p = pipeline_factory(venue="bitstamp", symbols=SYMBOLS, rate=1500, sim_args=[],
                         options={"heartbeat_interval": 1.0}, venue_config={"connections": 2})
    p.wait_health("connections", 2)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    faults = []
    for k in range(1, 4):
        faults.append(p.sim.fault("bitstamp", kind="notice", conn=_open_conn(p), close_after=3)["fault"])
        p.wait_health("rotations", k)
    # One of the two links dropped silently, another closed: the other link carried everything.
    faults.append(p.sim.fault("bitstamp", kind="silent_drop", conn=_open_conn(p))["fault"])
    p.wait_health("reconnects", 1)
    faults.append(p.sim.fault("bitstamp", kind="close", conn=_open_conn(p))["fault"])
    p.wait_health("reconnects", 2)
    faults.append(p.sim.fault("bitstamp", kind="malformed", count=3, conn=_open_conn(p))["fault"])
    faults.append(p.sim.fault("bitstamp", kind="unknown_symbol", conn=_open_conn(p))["fault"])
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert all(p.hour <= f["sim_time_us"] < p.hour_end for f in faults), "faults inside the audited hour"
    p.wait_hour_persisted()
    p.sim.control("bitstamp", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert p.health("rotations") >= 3 and p.health("reconnects") == 2, p.ingest.log(200)
    assert p.sim.stats("bitstamp")["bitstamp"]["reconnect_requests"] == 3

    got = check_ticks(p, clickhouse)          # strict: nothing lost, nothing doubled, ids text-equal
    assert not [g for g in got["gaps"] if g[1] == "reconnect"], got["gaps"]
    ids = [int(t[0]) for t in got["truth"][("bitstamp", "SOL-USD")]]
    assert min(ids) > 2 ** 53 and any(float(i) != i for i in ids), "ids a double cannot hold"
    assert max(int(t[0]) for t in got["truth"][("bitstamp", "BTC-USD")]) < 2 ** 53, "a legacy pair's ids are small"
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)


def test_an_unlisted_pair_fails_the_start_instead_of_a_silent_subscription(tmp_path, redis_server):
    sim = Simulator(SimulatorConfig(venues=["bitstamp"], symbols=SYMBOLS, rate=100,
                                    ground_truth=tmp_path / "gt.csv")).start()
    try:
        eps = sim.endpoints["bitstamp"]
        cfg = VenueConfig("bitstamp", ["BTC-USD", "XYZ-USD"], eps["ws"], eps["rest"])
        conn = VenueConnector(cfg, redis_server.url)
        with pytest.raises(ConfigError, match="XYZ-USD"):
            asyncio.run(asyncio.wait_for(conn.run(asyncio.Event()), 30))
        assert not sim.stats("bitstamp")["connections"], "no link was opened for a bad config"
    finally:
        sim.stop()
