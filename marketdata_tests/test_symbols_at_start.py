"""Configured symbols are checked at start: `marketdata up` refuses a symbol the (simulated)
venue would not list before it starts anything, the simulator refuses it with `--listed-only`,
and a connector whose venue cannot be reached at all goes on in offline mode and says so."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import pytest
import yaml

from marketdata.config import VenueConfig
from marketdata.ingest.connector import VenueConnector
from marketdata.simulator import Simulator, SimulatorConfig
from marketdata.simulator.listings import is_listed
from marketdata.storage.redis import free_port

from .harness import REPO, wait_for


def _cli(args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "marketdata.cli", *args], capture_output=True, text=True,
                          env=env, cwd=str(REPO), timeout=timeout)


def _env(tmp_path, cfg):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKETDATA_", "DAGSTER_"))}
    env.update(MARKETDATA_HOME=str(tmp_path / "home"), MARKETDATA_CONFIG=str(cfg), PYTHONUNBUFFERED="1")
    return env


@pytest.mark.parametrize("venue, bad", [("binance", "NOTREAL-USDT"), ("coinbase", "DOGE-USDT")])
def test_up_refuses_a_symbol_the_venue_does_not_list(tmp_path, venue, bad):
    good = "BTC-USDT" if venue == "binance" else "BTC-USD"
    cfg = tmp_path / "marketdata.yaml"
    cfg.write_text(yaml.safe_dump({"endpoints": "simulator", "venues": {venue: {"symbols": [good, bad]}}}))
    r = _cli(["up", "--no-dagster"], _env(tmp_path, cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "config error" in r.stderr and f"{bad} not listed by the venue" in r.stderr, r.stderr
    assert f"fix venues.{venue}.symbols" in r.stderr and good in r.stderr, "names the valid choices"
    assert not (tmp_path / "home" / "redis").exists(), "nothing was started for a bad config"


def test_simulate_listed_only_refuses_unlisted_symbols(tmp_path):
    r = _cli(["simulate", "--venues", "okx", "--symbols", "BTC-USDT,NOTREAL-USDT", "--listed-only"], os.environ, 60)
    assert r.returncode == 2 and "NOTREAL-USDT not listed by the venue" in r.stderr, r.stderr
    assert not is_listed("okx", "NOTREAL-USDT") and is_listed("okx", "DOGE-USDT")
    assert not is_listed("coinbase", "DOGE-USDT") and is_listed("coinbase", "DOGE-USD")


def test_connector_that_cannot_reach_the_instruments_list_goes_on_offline(tmp_path, redis_server, caplog):
    sim = Simulator(SimulatorConfig(venues=["binance"], symbols=["BTC-USDT"], rate=200,
                                    ground_truth=tmp_path / "gt.csv")).start()
    dead = f"http://127.0.0.1:{free_port()}"          # nothing listens: the REST side is offline
    conn = VenueConnector(VenueConfig("binance", ["BTC-USDT"], sim.endpoints["binance"]["ws"], dead),
                          redis_server.url)
    stop = asyncio.Event()

    async def run():
        task = asyncio.create_task(conn.run(stop))
        await asyncio.to_thread(wait_for, lambda: conn.ticks_in > 50 or task.done(), 90, "ticks while offline")
        stop.set()
        await task

    try:
        with caplog.at_level(logging.WARNING, logger="marketdata.ingest"):
            asyncio.run(run())
    finally:
        sim.stop()
    assert conn.ticks_in > 50 and not conn.instruments_checked
    assert conn.health()["instruments_checked"] == 0
    offline = [r.getMessage() for r in caplog.records if "OFFLINE" in r.getMessage()]
    assert offline and "NOT checked" in offline[0] and "BTCUSDT" in offline[0], offline
