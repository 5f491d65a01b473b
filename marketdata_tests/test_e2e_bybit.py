"""Bybit end to end, as real processes (simulator -> `marketdata ingest` -> Redis -> persist ->
ClickHouse -> bars and the completeness audit).

Bybit's REST gives back only the last 60 trades and its ids are not consecutive, so:
- with one connection, every drop is a hole in time that REST cannot fill: it must be recorded
  unrepairable exactly where the drop was, and the audit must name exactly those minutes;
- with two connections (`connections: 2`) the connector keeps the union of both links, so dropping
  one link at a time, again and again, loses nothing: the hour is complete.
"""

from __future__ import annotations

import pytest

from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import HOUR, HOUR_END, check_bars, check_dagster, check_ticks, pipeline_factory  # noqa: F401

pytestmark = pytest.mark.timeout(240)

VENUE = "bybit"
# The simulator cuts a link without an op ping for 3 s; our pings every 1 s must keep it alive.
SIM_ARGS = ["--venue-option", "bybit.idle_timeout=3"]
OPTIONS = {"ping_interval": 1.0}
# More than the 10 args one spot subscribe may carry: the connector must split its subscribe.
TWELVE = [f"{b}-USDT" for b in ("BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "LTC", "DOT", "LINK", "AVAX",
                                "TRX", "BCH")]
CONNECTIONS = 2   # the redundancy test; with 1 it fails (trades lost in unrepairable gaps)


def _live_links(p, n_symbols: int) -> list[dict]:
    """Open, non-silent simulator connections subscribed to every symbol that have sent trades for
    a while (so the connector has read the subscribe ack before the other link is cut)."""
    st = p.sim.stats(VENUE)
    subs = st["bybit"]["subscriptions"]
    return [c for c in st["connections"] if c["state"] == "open" and c["trades_sent"] > 200
            and len(subs.get(str(c["conn"]), [])) == n_symbols]


def _at(f: int, t: int, drop_us: int) -> bool:
    """A gap [f, t] is the one a drop at `drop_us` made: it starts at the last trade before the
    drop (a few simulated seconds earlier; a close frame may trail a slice of trades). Its end is
    where the venue's last trades begin, which can be that same trade's millisecond (then f == t:
    the REST page reaches our last trade but may miss others of its millisecond)."""
    return f - 10_000_000 <= drop_us and drop_us - f < US_PER_MINUTE


def test_bybit_drops_are_unrepairable_exactly_where_injected(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(venue=VENUE, sim_args=SIM_ARGS, options=OPTIONS, symbols=TWELVE, rate=2000)
    p.wait_health("connections", 1)
    wait_for(lambda: _live_links(p, len(TWELVE)), 30, "a link subscribed to all 12 symbols",
             on_timeout=p.diagnostics)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")

    drops = [p.inject(kind="silent_drop")]
    p.wait_health("reconnects", 1)
    p.wait_health("gaps_unrepairable", len(TWELVE), timeout=60)
    wait_for(lambda: p.sim_now() >= HOUR + 20 * US_PER_MINUTE, 60, "sim time 10:20")
    drops.append(p.inject(kind="close"))
    p.wait_health("reconnects", 2)
    p.wait_health("connections", 1)
    others = [p.inject(kind="malformed", count=3), p.inject(kind="unknown_symbol")]
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert all(HOUR <= f["sim_time_us"] < HOUR_END for f in drops + others), "machine too slow?"
    p.wait_hour_persisted()
    p.sim.control(VENUE, "/_sim/flush", {})

    assert p.ingest.alive(), p.ingest.log()
    assert "bybit: malformed frame skipped" in p.ingest.log(400)
    # Only the injected drops: the op pings kept the link alive past the venue's idle cut.
    assert p.health("reconnects") == 2, p.ingest.log(200)
    st = p.sim.stats(VENUE)
    assert st["bybit"]["idle_drops"] == 0 and st["bybit"]["rejected_subscribes"] == 0

    got = check_ticks(p, clickhouse, allow_unrepairable=True)
    assert got["missing"], "a drop on Bybit loses trades REST cannot give back"
    # Every gap is a reconnect span; the silent drop (seconds of trades per symbol, far more than
    # the last 60) is unrepairable on every symbol, and every unrepairable gap starts at a drop.
    assert {g[1] for g in got["gaps"]} == {"reconnect"}, got["gaps"]
    unrep = [g for g in got["gaps"] if g[2] == "unrepairable"]
    silent = drops[0]["sim_time_us"]
    assert {g[0] for g in unrep if _at(g[3], g[4], silent)} == set(TWELVE), unrep
    for sym, _, _, f, t in unrep:
        assert any(_at(f, t, d["sim_time_us"]) for d in drops), (sym, f, t, drops)
    audits = check_bars(p, clickhouse, got["truth"], expect_complete=False)
    assert not all(a.passed for a in audits)
    check_dagster(p, monkeypatch, expect_pass=False)


def test_bybit_redundant_connections_lose_nothing_across_repeated_drops(pipeline_factory, clickhouse):
    p = pipeline_factory(venue=VENUE, sim_args=SIM_ARGS, options=OPTIONS, rate=2000,
                         venue_config={"connections": CONNECTIONS})
    n = len(p.symbols)
    wait_for(lambda: _live_links(p, n), 30, "a subscribed link", on_timeout=p.diagnostics)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: len(_live_links(p, n)) >= CONNECTIONS, 30, f"{CONNECTIONS} subscribed links",
             on_timeout=p.diagnostics)
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")

    dropped = []
    for k in range(6):
        links = wait_for(lambda: (ls := _live_links(p, n)) and len(ls) >= CONNECTIONS and ls, 30,
                         f"{CONNECTIONS} subscribed links before drop {k + 1}", on_timeout=p.diagnostics)
        # The older link each time: the connector's two slots take turns being cut.
        oldest = min(c["conn"] for c in links)
        dropped.append(p.inject(kind="silent_drop" if k % 2 == 0 else "close", conn=oldest))
        p.wait_health("reconnects", k + 1)
    wait_for(lambda: len(_live_links(p, n)) >= CONNECTIONS, 30, "both links back", on_timeout=p.diagnostics)
    assert all(HOUR <= f["sim_time_us"] < HOUR_END for f in dropped), "machine too slow?"
    assert len({f["applied_to"][0] for f in dropped}) == len(dropped)
    p.wait_hour_persisted()
    p.sim.control(VENUE, "/_sim/flush", {})

    assert p.ingest.alive(), p.ingest.log()
    assert p.health("reconnects") == len(dropped), p.ingest.log(200)
    got = check_ticks(p, clickhouse)          # strict: nothing lost, nothing doubled
    assert not got["gaps"], got["gaps"]
    check_bars(p, clickhouse, got["truth"])   # bars equal the truth, the audit passes
    # Both links carried the same trades; the copies were dropped by id, and no hole ever opened.
    assert p.health("gaps_found") == 0, p.ingest.log(200)
    assert p.health("duplicates") > 10_000
