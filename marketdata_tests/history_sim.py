"""A venue simulator that has generated 09:55..12:10 of 2026-01-05 (or start..end) and stopped trading (its REST
history and ground truth are the reference of the history tests), and a fresh store whose config
names it, through the deployment's env vars."""

from __future__ import annotations

from contextlib import contextmanager

from marketdata.clock import parse_time_us

from .harness import SimProc, platform_env, wait_for, write_config

SIM_END = parse_time_us("2026-01-05T12:10Z")


@contextmanager
def history_sim(tmp, venue: str, symbols: list[str], *, rate: int, seed: int, start: str = "2026-01-05T09:55:00Z",
                end: str = "2026-01-05T12:10:00Z", extra: tuple[str, ...] = ()):
    end_us = parse_time_us(end)
    env = platform_env(tmp, "redis://127.0.0.1:1/0", "http://127.0.0.1:9")
    s = SimProc(["simulate", "--venues", venue, "--symbols", ",".join(symbols), "--rate", str(rate),
                 "--seed", str(seed), "--start", start, "--end", end,
                 "--speed", "3600", "--ground-truth", str(tmp / "truth.csv"), *extra], env, tmp)
    try:
        wait_for(lambda: s.stats(venue)["sim_time_us"] > end_us + 60_000_000, 30, f"simulated {end} + 1 min")
        s.control(venue, "/_sim/flush", {})
        s.truth_path = tmp / "truth.csv"
        s.rest_url = s.endpoints[venue]["rest"]
        yield s
    finally:
        s.stop()


def history_store(tmp_path, monkeypatch, clickhouse, venue: str, symbols: list[str], rest_url: str):
    cfg = write_config(tmp_path / "marketdata.yaml", {venue: {
        "symbols": symbols, "endpoints": "live", "rest_url": rest_url, "ws_url": "ws://127.0.0.1:1"}})
    monkeypatch.setenv("MARKETDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MARKETDATA_CLICKHOUSE_URL", clickhouse.url)
    monkeypatch.setenv("MARKETDATA_CONFIG", str(cfg))
    return clickhouse
