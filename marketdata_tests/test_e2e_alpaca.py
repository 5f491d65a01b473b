"""Alpaca (IEX) end to end, as real processes: simulator -> `marketdata ingest` -> Redis ->
`marketdata persist` -> ClickHouse -> bars_1m, the completeness audit per the NYSE calendar and
the Dagster check.

The audited hour is a session hour (2026-01-05 15:00 UTC = 10:00 ET). Traps: key authentication
from the environment (a wrong secret is reported as 402 and never logged), a silent drop and a
close repaired by time from REST trades (ids are not consecutive), corrections and cancels that
must supersede / delete the stored trades (the ground truth reflects them).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import httpx
import pytest

from marketdata.clock import US_PER_MINUTE

from .harness import wait_for
from .pipeline import check_bars, check_dagster, check_ticks, pipeline_factory  # noqa: F401

HOUR = int(datetime(2026, 1, 5, 15, tzinfo=timezone.utc).timestamp() * 1_000_000)
SYMBOLS = ["AAPL-USD", "MSFT-USD"]
KEY, SECRET = "PKTEST1234", "s3cr3t-n0t-f0r-l0gs"


def _keys(secret: str = SECRET) -> dict:
    return {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": secret}


def _sim_args(*extra: str) -> list[str]:
    return ["--venue-option", f"alpaca.key={KEY}", "--venue-option", f"alpaca.secret={SECRET}", *extra]


def _amend(p, kind: str, count: int) -> list[str]:
    """A correction/cancel fault, retried until a subscribed connection hears it. Returns the ids."""
    def attempt():
        try:
            return p.sim.fault("alpaca", kind=kind, symbol="AAPL-USD", count=count)["fault"]
        except httpx.HTTPStatusError:
            return None         # between connections: the simulator refuses, nothing changed
    f = wait_for(attempt, 30, f"{kind} applied", interval=0.2, on_timeout=p.diagnostics)
    return f["note"].split(" trade ids ")[1].split(",")


def test_alpaca_e2e_corrections_cancels_and_drops_match_ground_truth(pipeline_factory, clickhouse, monkeypatch):
    p = pipeline_factory(venue="alpaca", symbols=SYMBOLS, hour=HOUR, sim_args=_sim_args(), options={},
                         env=_keys(), rate=1500)
    p.wait_health("connections", 1)
    assert p.sim_now() < HOUR, "the connector must be subscribed before the audited hour starts"
    wait_for(lambda: p.sim_now() >= HOUR + 2 * US_PER_MINUTE, 60, "sim time 10:02 ET")
    p.inject(kind="silent_drop")
    p.wait_health("reconnects", 1)
    p.inject(kind="close")
    p.wait_health("reconnects", 2)
    corrected = _amend(p, "correct", 3)
    cancelled = _amend(p, "cancel", 3)
    p.inject(kind="malformed", count=3)
    p.inject(kind="unknown_symbol")
    p.wait_health("malformed", 3)
    p.wait_health("unknown_symbols", 1)
    assert p.sim_now() < p.hour_end, "faults must land inside the audited hour (machine too slow?)"
    p.wait_hour_persisted()
    p.sim.control("alpaca", "/_sim/flush", {})
    assert p.ingest.alive(), p.ingest.log()
    assert p.health("reconnects") == 2, p.ingest.log(200)

    got = check_ticks(p, clickhouse)
    # The drops were spans of time (ids say nothing on IEX), repaired from REST trades by time.
    assert {"reconnect"} <= {g[1] for g in got["gaps"] if g[2] == "repaired"}, got["gaps"]
    with clickhouse.session() as c:
        rows = c.query("SELECT trade_id, event, is_deleted FROM marketdata.ticks WHERE exchange = 'alpaca'"
                       " AND trade_id IN {ids:Array(String)}", parameters={"ids": corrected + cancelled}).result_rows
        final = {r[0] for r in c.query("SELECT trade_id FROM marketdata.ticks FINAL WHERE exchange = 'alpaca'"
                                       " AND trade_id IN {ids:Array(String)}",
                                       parameters={"ids": corrected + cancelled}).result_rows}
    # The corrections and cancels came over the stream and were stored as such; under FINAL the
    # cancelled trades are gone and the corrected ones carry the new values (check_ticks).
    assert {r[0] for r in rows if r[1] == "correct"} == set(corrected)
    assert {r[0] for r in rows if r[1] == "cancel" and r[2] == 1} == set(cancelled)
    assert final == set(corrected)
    check_bars(p, clickhouse, got["truth"])
    check_dagster(p, monkeypatch)


def test_alpaca_wrong_secret_is_reported_as_402_and_never_logged(pipeline_factory, clickhouse):
    wrong = "wr0ng-s3cr3t-value"
    # REST left open so the start succeeds and the stream's own refusal is what gets reported.
    p = pipeline_factory(venue="alpaca", symbols=SYMBOLS, hour=HOUR, options={}, env=_keys(wrong), hold=False,
                         sim_args=_sim_args("--venue-option", "alpaca.rest_auth=false"))
    failures = lambda: p.sim.stats("alpaca")["alpaca"]["auth_failures"]  # noqa: E731
    wait_for(lambda: failures() >= 1, 30, "a refused auth", interval=0.05, on_timeout=p.diagnostics)
    t0 = time.monotonic()
    wait_for(lambda: "402" in p.ingest.log(400), 20, "402 in the connector log", on_timeout=p.diagnostics)
    log = p.ingest.log(1000)
    assert "auth failed" in log and "APCA_API_KEY_ID" in log and "APCA_API_SECRET_KEY" in log, log
    wait_for(lambda: failures() >= 5, 60, "retries with backoff", interval=0.05, on_timeout=p.diagnostics)
    # Every retry waits at least half the 0.5 s base: four of them cannot fit in 0.75 s when the
    # connector backs off (hammering would make these five refusals in a few milliseconds).
    assert time.monotonic() - t0 >= 0.75, "refusals are retried with backoff, not hammered"
    assert p.ingest.alive(), log
    assert p.health("ticks_in") == 0
    for proc in (p.ingest, p.persist, p.sim):
        assert wrong not in proc.log(5000) and SECRET not in proc.log(5000), proc.name


def test_alpaca_missing_keys_fail_the_start_naming_the_variables(monkeypatch):
    from marketdata.errors import ConfigError
    from marketdata.venues import alpaca

    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.setenv("APCA_API_SECRET_KEY", "x")
    with pytest.raises(ConfigError, match="APCA_API_KEY_ID") as e:
        alpaca.instruments_request()
    assert "APCA_API_SECRET_KEY" not in str(e.value)
    monkeypatch.delenv("APCA_API_SECRET_KEY")
    with pytest.raises(ConfigError, match="APCA_API_KEY_ID and APCA_API_SECRET_KEY"):
        alpaca.auth_messages({})
