"""Coinbase end to end, as real processes: simulator -> `marketdata ingest` -> Redis -> `marketdata
persist` -> ClickHouse -> bars_1m, the completeness audit and the Dagster check.

Coinbase's traps: `side` on the wire is the maker's (the stored taker side is compared with the
ground truth for every trade); `trade_id` continuity; the LAST trades before a quiet market are
withheld, so no later trade reveals the jump and only the `heartbeat` channel's `last_trade_id`
does (the gap must be found by "heartbeat" and repaired from REST paged by id); and the venue cuts a
link that does not subscribe within its deadline.
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest

from marketdata.clock import US_PER_MINUTE
from marketdata.config import VenueConfig
from marketdata.ingest.connector import VenueConnector
from marketdata.simulator import Simulator, SimulatorConfig
from marketdata.stream import sequence_key
from marketdata.venues import coinbase

from .harness import wait_for
from .pipeline import HOUR, check_bars, check_dagster, check_ticks, pipeline_factory, standard_faults  # noqa: F401

SYMBOLS = ["BTC-USD", "ETH-USD"]


def test_coinbase_traps_and_quiet_period_heartbeat_gap_match_ground_truth(pipeline_factory, clickhouse,
                                                                          monkeypatch):
    p = pipeline_factory(venue="coinbase", symbols=SYMBOLS, sim_args=[], options={})
    p.wait_health("connections", 1)
    # When the link opened (health is written once a second, so read the simulator's record).
    st = p.sim.stats("coinbase")
    opened = min(c["opened_at"] for c in st["connections"] + st["closed_connections"])
    assert st["sim_time_us"] - (time.time() - opened) * 90 * 1e6 < HOUR, \
        "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02")
    standard_faults(p)

    # The last trades before a quiet market: withheld, then generation pauses. No trade follows,
    # so only the heartbeat's last_trade_id can show that they exist.
    repaired = p.health("gaps_repaired")
    wait_for(lambda: p.sim_now() >= HOUR + 20 * US_PER_MINUTE, 60, "sim time 10:20")
    fault = p.sim.fault("coinbase", kind="skip_ids", symbol="BTC-USD", count=40, then_pause=True)["fault"]
    quiet = wait_for(lambda: p.sim.stats("coinbase")["coinbase"]["quiet_periods"], 30, "the quiet period")[0]
    p.wait_health("gaps_repaired", repaired + 1)
    # A heartbeat that went out while ids were still being withheld found only the first of them;
    # a later one finds the rest. Resume only once the tape holds the last withheld id and no hole
    # is open (else the next live trade, not a heartbeat, would find what is left).
    seq_key = sequence_key("coinbase", "BTC-USD")

    def withheld_all_repaired() -> bool:
        st = p.r.hgetall(seq_key)          # written with each flush, after the entries it describes
        return int(st.get(b"last_id") or 0) >= quiet["last_id"] and orjson.loads(st.get(b"holes") or b"[1]") == []
    wait_for(withheld_all_repaired, 60, "every withheld id found by heartbeats and repaired")
    assert p.sim.stats("coinbase")["paused"], "found and repaired while the market is still quiet"
    p.sim.control("coinbase", "/_sim/resume", {})
    assert HOUR < fault["sim_time_us"] and quiet["paused_at_us"] < p.hour_end - 20 * US_PER_MINUTE

    p.wait_hour_persisted()
    p.sim.control("coinbase", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert "coinbase: malformed frame skipped" in p.ingest.log(400)
    assert p.health("reconnects") == 2, p.ingest.log(200)

    # Every stored tick equals the ground truth, its taker side included (the wire says the
    # maker's); nothing lost, nothing stored twice.
    got = check_ticks(p, clickhouse)
    sides = {t[4] for trades in got["truth"].values() for t in trades}
    assert sides == {"buy", "sell"}
    with clickhouse.session() as c:
        gaps = c.query("SELECT symbol, found_by, status, from_id, to_id, repaired_by FROM marketdata.gaps FINAL"
                       " WHERE exchange = 'coinbase'").result_rows
    # Heartbeats found exactly the withheld ids (one gap, or several when a heartbeat went out while
    # they were still being withheld), and the repair filled them.
    # (The standard skip_ids above may have been found by a heartbeat too, if one came before the
    # next trade: only the gaps at the quiet period count here.)
    found = sorted((int(g[3]), int(g[4])) for g in gaps if g[0] == "BTC-USD" and g[1] == "heartbeat"
                   and int(g[4]) >= quiet["first_id"])
    assert found and all(g[2] == "repaired" and g[5] == "rest_by_id" for g in gaps if g[1] == "heartbeat"), gaps
    assert found[0][0] == quiet["first_id"] and found[-1][1] == quiet["last_id"], found
    assert all(b[0] == a[1] + 1 for a, b in zip(found, found[1:])), found
    assert "reconnect" in {g[1] for g in gaps if g[2] == "repaired"}
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)


class _LateParser(coinbase.Parser):
    """A connector that waits for a greeting Coinbase never sends before it subscribes (with the
    contract's GREETING set, the link waits until the parser is ready, which it never is)."""
    ready = False


def _run_connector(cfg: VenueConfig, redis_url: str):
    conn = VenueConnector(cfg, redis_url, coverage_interval=0.5, health_interval=0.5)
    stop = threading.Event()

    def target():
        async def main():
            ev = asyncio.Event()

            async def watch():
                while not stop.is_set():
                    await asyncio.sleep(0.05)
                ev.set()
            w = asyncio.create_task(watch())
            await conn.run(ev)
            await w
        asyncio.run(main())

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return conn, stop, t


@pytest.mark.parametrize("late", [True, False], ids=["late", "prompt"])
def test_subscribe_deadline_cuts_a_late_connector_only(late, tmp_path, redis_server, monkeypatch):
    deadline = 1.0
    sim = Simulator(SimulatorConfig(venues=["coinbase"], symbols=SYMBOLS, rate=300, speed=10,
                                    venue_options={"coinbase": {"subscribe_deadline": deadline}})).start()
    if late:
        # The contract says whether a venue greets (GREETING) and which Parser it uses.
        monkeypatch.setattr(coinbase.Coinbase, "Parser", _LateParser)
        monkeypatch.setattr(coinbase.Coinbase, "GREETING", True)
    ep = sim.endpoints["coinbase"]
    cfg = VenueConfig("coinbase", SYMBOLS, ep["ws"], ep["rest"], idle_timeout=2.5)
    conn, stop, thread = _run_connector(cfg, redis_server.url)
    try:
        if late:
            wait_for(lambda: sim.stats("coinbase")["coinbase"]["deadline_cuts"] >= 2, 30, "two deadline cuts")
            closed = sim.stats("coinbase")["closed_connections"]
            assert {c["closed_reason"] for c in closed} == {"subscribe_deadline"}
            assert all(c["msgs_received"] == 0 for c in closed), "it never subscribed"
            assert conn.ticks_in == 0 and conn.venue_errors >= 1
        else:
            t0 = time.monotonic()
            # Observed over three deadlines: subscribed at once, never cut, never reconnected.
            wait_for(lambda: conn.ticks_in > 100 and time.monotonic() - t0 > 3 * deadline, 30,
                     "ticks over three deadlines")
            st = sim.stats("coinbase")
            assert st["coinbase"]["deadline_cuts"] == 0 and not st["closed_connections"]
            assert len(st["connections"]) == 1 and conn.reconnects == 0
    finally:
        stop.set()
        thread.join(30)
        sim.stop()
    assert not thread.is_alive()


def _tick(tid: int, ts: int):
    from marketdata.tick import Tick
    return Tick.trade("coinbase", "BTC-USD", ts, "1", "1", "buy", str(tid), ts)


def test_heartbeat_last_trade_id_opens_and_ends_holes():
    from marketdata.ingest.sequence import SymbolSequence
    seq = SymbolSequence("coinbase", "BTC-USD", "BTC-USD")
    seq.on_subscribed()
    gaps: list = []
    assert not seq.on_last_trade_id(5, 50, gaps), "no tape yet: nothing to compare with"
    assert seq.accept(_tick(10, 100), 10, gaps)
    assert not seq.on_last_trade_id(10, 150, gaps) and not seq.holes
    # quiet market: ids 11..14 exist at the venue, no trade follows
    assert seq.on_last_trade_id(14, 200, gaps)
    (h,) = seq.holes
    assert (h.lo, h.hi, h.before_ts, h.after_ts, h.found_by) == (11, 14, 100, 200, "heartbeat")
    assert [(g.from_id, g.to_id, g.status) for g in gaps] == [("11", "14", "open")]
    assert seq.accept(_tick(15, 210), 15, gaps) and len(seq.holes) == 1, "the next trade continues the tape"
    seq.holes.clear()
    # after a reconnect the span is open-ended; the heartbeat ends it where the venue's tape ends
    seq.on_disconnect()
    seq.on_subscribed()
    assert seq.holes[-1].hi is None
    assert seq.on_last_trade_id(18, 300, gaps)
    assert (seq.holes[-1].lo, seq.holes[-1].hi, seq.holes[-1].after_ts) == (16, 18, 300)
    seq.holes.clear()
    seq.on_disconnect()
    seq.on_subscribed()
    assert seq.on_last_trade_id(18, 400, gaps) and not seq.holes, "nothing was missed while away"
