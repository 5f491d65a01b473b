"""Gate.io end to end, as real processes: simulator -> `marketdata ingest` -> Redis -> persist ->
ClickHouse -> bars_1m -> Dagster check, one simulated hour with the standard traps.

Gate.io's own traps: the server cuts a link that sent nothing (3 s here) -- our `spot.ping`
keeps it; `create_time_ms` is a string with sub-millisecond digits -- stored ticks must carry the
exact µs; `id_market` is the continuity field -- a skipped trade is a gap, repaired from REST
by `last_id` (a platform id, not the market id), as are both reconnect spans."""

from __future__ import annotations

import pytest

from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import HOUR, check_bars, check_dagster, check_ticks, pipeline_factory, standard_faults  # noqa: F401

pytestmark = pytest.mark.timeout(240)


def test_gateio_end_to_end_with_faults_matches_ground_truth(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(venue="gateio", rate=1500, sim_args=["--venue-option", "gateio.idle_timeout=3"],
                         options={"ping_interval": 1.0})
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    standard_faults(p)
    p.wait_hour_persisted()
    p.sim.control("gateio", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert "gateio: malformed frame skipped" in p.ingest.log(400)
    # Only the two injected drops: spot.ping held the link against the idle cut.
    assert p.health("reconnects") == 2, p.ingest.log(200)
    assert p.sim.stats("gateio")["gateio"]["idle_drops"] == 0

    got = check_ticks(p, clickhouse)      # exact µs from create_time_ms, nothing lost or doubled
    assert sum(1 for v in got["truth"].values() for t in v if t[1] % 1000) > 1000, "sub-ms timestamps"
    assert {"id_jump", "reconnect"} <= {g[1] for g in got["gaps"] if g[2] == "repaired"}
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)
