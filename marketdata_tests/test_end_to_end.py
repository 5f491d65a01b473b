"""The whole path for Binance, as real processes: simulator -> `marketdata ingest` -> Redis ->
`marketdata persist` -> ClickHouse -> bars_1m and the completeness audit.

Binance runs on both WebSocket transports (ingest/link.py: picows, the default, and websockets). One simulated hour runs in ~30 wall seconds (speed 120) with a silent drop, a closed connection,
a trade-id gap, malformed frames and an unknown symbol injected. Afterwards ClickHouse must hold
exactly the simulator's ground truth for the hour, coverage must span the hour, bars must equal
bars computed independently from the ground truth, and the completeness audit must pass. With
repair disabled, the audit must fail and name exactly the minutes the unrepairable gaps touch.
"""

from __future__ import annotations

from collections import defaultdict
import pytest

from marketdata.bars.build import build_bars
from marketdata.bars.completeness import audit_hours
from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import (HOUR, HOUR_END, SYMBOLS, check_bars, check_dagster, check_ticks,  # noqa: F401
                       pipeline_factory, read_truth, standard_faults)

@pytest.mark.parametrize("venue,transport", [("binance", None), ("okx", None), ("binance", "websockets")])
def test_end_to_end_with_faults_matches_ground_truth(venue, transport, pipeline_factory, clickhouse, monkeypatch):
    # Every venue's end-to-end test runs on the default transport (picows); Binance also on websockets.
    env = {"MARKETDATA_WS_TRANSPORT": transport} if transport else {}
    monkeypatch.delenv("MARKETDATA_WS_TRANSPORT", raising=False)
    p = pipeline_factory(repair=True, venue=venue, env=env)
    transport = transport or "picows"
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    standard_faults(p)
    p.wait_hour_persisted()
    p.sim.control(venue, "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert f"{venue}: malformed frame skipped" in p.ingest.log(400)
    assert f"{venue} connection 0 open ({transport})" in p.ingest.log(100_000)
    # Only the two injected drops: keepalive held the link otherwise (OKX cuts a quiet client).
    assert p.health("reconnects") == 2, p.ingest.log(200)

    got = check_ticks(p, clickhouse)
    # Every injected fault was noticed and repaired; nothing is left unrepairable.
    assert {"id_jump", "reconnect"} <= {g[1] for g in got["gaps"] if g[2] == "repaired"}
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)


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
