"""Stock ccxt.pro (4.5, from PyPI, in its own venv) against the simulator, for all nine crypto
venues: only the endpoint URLs are overridden, through ccxt's documented `urls` config. Each client loads its markets with the default
`load_markets()` and `watch_trades` for two symbols; every trade it receives equals the
simulator's tape (id, price, amount, side, timestamp), and between the first and the last trade
it received per symbol, it received every trade of the tape. (Bitstamp: ccxt reads the number `id`,
which beyond 2^53 -- the newer market SOL-USD -- is what a double holds, as on the real venue; the
exact id is `id_str`, and ccxt's id must equal its double.)

All nine clients run at once, in one subprocess, so the tier costs one import of ccxt and its
wall time is that of the slowest venue."""

from __future__ import annotations

import json
import subprocess
import time
from decimal import Decimal

import pytest

from marketdata.simulator import Simulator, SimulatorConfig

from .client_venv import CLIENTS, client_python

pytestmark = pytest.mark.timeout(600)

SYMBOLS = {"binance": ["BTC-USDT", "ETH-USDT"], "okx": ["BTC-USDT", "ETH-USDT"], "kucoin": ["BTC-USDT", "ETH-USDT"],
           "kraken": ["BTC-USD", "ETH-USD"], "coinbase": ["BTC-USD", "ETH-USD"], "bybit": ["BTC-USDT", "ETH-USDT"],
           "bitfinex": ["BTC-USD", "ETH-USD"], "gateio": ["BTC-USDT", "ETH-USDT"],
           # a legacy pair (small ids) and a newer market whose ids are beyond 2^53
           "bitstamp": ["BTC-USD", "SOL-USD"]}
MIN_TRADES = 15          # per symbol
WINDOW_S = 60.0          # the longest a client may take to load its markets and receive them


def ccxt_config(venue: str, rest: str, ws: str) -> tuple[str, dict]:
    """The ccxt exchange id and constructor config that point it at the simulator: URLs only."""
    if venue == "binance":
        return "binance", {"urls": {"api": {"public": rest + "/api/v3", "fapiPublic": rest + "/fapi/v1",
                                            "dapiPublic": rest + "/dapi/v1", "ws": {"spot": ws + "/ws"}}}}
    if venue == "okx":
        return "okx", {"urls": {"api": {"rest": rest, "ws": ws + "/ws/v5"}}}
    if venue == "kucoin":
        return "kucoin", {"urls": {"api": {"public": rest, "futuresPublic": rest}}}
    if venue == "kraken":
        return "kraken", {"urls": {"api": {"public": rest, "ws": {"public": ws, "publicV2": ws + "/v2"}}}}
    if venue == "coinbase":
        return "coinbaseexchange", {"urls": {"api": {"public": rest, "ws": ws}}}
    if venue == "bybit":
        return "bybit", {"urls": {"api": {"public": rest, "spot": rest,
                                          "ws": {"public": {"spot": ws + "/v5/public/spot"}}}}}
    if venue == "bitfinex":
        return "bitfinex", {"urls": {"api": {"public": rest, "ws": {"public": ws + "/ws/2"}}}}
    if venue == "gateio":
        sections = ("wallet", "futures", "margin", "delivery", "spot", "options", "sub_accounts", "earn")
        return "gate", {"urls": {"api": {"public": {k: rest + "/api/v4" for k in sections}, "spot": ws + "/ws/v4/"}}}
    if venue == "bitstamp":
        return "bitstamp", {"urls": {"api": {"public": rest + "/api", "ws": ws}}}
    raise KeyError(venue)


def unified(symbol: str) -> str:
    return symbol.replace("-", "/")


def ccxt_runs(tmp_path_factory):
    """Every venue's ccxt client, all in one process (one import of ccxt), against one simulator:
    venue -> (its output lines, stderr, returncode, the simulator's tape per symbol)."""
    py = client_python("ccxt")
    sim = Simulator(SimulatorConfig(venues=list(SYMBOLS), symbols=SYMBOLS, rate=30, ping_interval=5,
                                    ground_truth=tmp_path_factory.mktemp("ccxt") / "gt.csv")).start()
    proc = None
    try:
        t0 = time.monotonic()
        specs = {}
        for venue, syms in SYMBOLS.items():
            ep = sim.endpoints[venue]
            exchange, config = ccxt_config(venue, ep["rest"], ep["ws"])
            specs[venue] = {"exchange": exchange, "config": config, "symbols": [unified(s) for s in syms],
                            "min_trades": MIN_TRADES, "timeout": WINDOW_S}
        proc = subprocess.Popen([str(py), str(CLIENTS / "ccxt_trades.py"), json.dumps(specs)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate(timeout=WINDOW_S + 120)
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        print(f"ccxt tier: nine venues in {time.monotonic() - t0:.1f}s wall")
        return {v: ([x for x in lines if x["venue"] == v], stderr, proc.returncode,
                    {s: sim.trades(v, s) for s in syms}) for v, syms in SYMBOLS.items()}
    finally:
        if proc is not None and proc.poll() is None:     # the client overran its window
            proc.kill()
            proc.wait()
        sim.stop()


def fill_ids(venue: str, trade: dict) -> list[str]:
    """The tape ids (ground-truth trade ids) one trade ccxt received stands for."""
    if venue == "gateio":
        # the tape holds `id_market`; ccxt reads the platform-wide `id` = id_market * 64 + the pair's
        # index (marketdata/simulator/gateio.py)
        return [str(int(trade["id"]) // 64)]
    if venue == "okx":
        # OKX `trades` is one push per taker order: tradeId is its last fill, `count` its fills
        last, count = int(trade["id"]), int(trade["info"].get("count") or 1)
        return [str(i) for i in range(last - count + 1, last + 1)]
    if venue == "bitstamp":
        # ccxt reads the number `id`; beyond 2^53 (newer markets) that is what a double holds, so
        # the exact id is `id_str`. The test below checks ccxt's id is exactly that double.
        return [trade["info"]["id_str"]]
    return [trade["id"]]


def check_venue(venue: str, run) -> None:
    lines, stderr, rc, tapes = run
    assert rc == 0, stderr[-3000:]
    errors = [x["error"] for x in lines if "error" in x]
    assert not errors, errors[0]
    markets = next(line["markets"] for line in lines if "markets" in line)
    assert {unified(s) for s in SYMBOLS[venue]} <= set(markets), markets
    done = next(line["done"] for line in lines if "done" in line)
    assert all(n >= MIN_TRADES for n in done.values()), (done, stderr[-2000:])
    trades = [line["trade"] for line in lines if "trade" in line]
    for sym in SYMBOLS[venue]:
        tape = tapes[sym]
        got = [t for t in trades if t["symbol"] == unified(sym)]
        by_id = {r["trade_id"]: r for r in tape}
        mismatches, ids = [], []
        for t in got:
            fills = [by_id.get(i) for i in fill_ids(venue, t)]
            if None in fills:
                mismatches.append(("unknown id", t))
                continue
            ids += [r["trade_id"] for r in fills]
            r = fills[-1]
            qty = sum(Decimal(f["qty"]) for f in fills)
            want = (float(Decimal(r["price"])), float(qty), r["side"], r["ts_us"] // 1000)
            have = (t["price"], t["amount"], t["side"], t["timestamp"])
            if want != have or any((f["price"], f["side"], f["ts_us"]) != (r["price"], r["side"], r["ts_us"])
                                   for f in fills):
                mismatches.append((t["id"], want, have))
            if venue == "bitstamp" and t["id"] != str(int(float(r["trade_id"]))):
                mismatches.append(("ccxt id is not the double of id_str", t["id"], r["trade_id"]))
        if venue == "bitstamp":
            assert (int(ids[0]) > 2 ** 53) == (sym == "SOL-USD"), "ids beyond 2^53 only on the newer market"
        assert not mismatches, mismatches[:5]
        # Between the first and the last trade received, every trade of the tape was received.
        pos = {r["trade_id"]: i for i, r in enumerate(tape)}
        idx = sorted({pos[i] for i in ids})
        assert idx == list(range(idx[0], idx[-1] + 1)), "a trade inside the window was not received"


def test_stock_ccxt_loads_markets_and_receives_the_tape(tmp_path_factory):
    """One run of every venue's client at once (one test, so parallel workers do not repeat it);
    the failures are reported per venue."""
    runs = ccxt_runs(tmp_path_factory)
    failures = {}
    for venue, run in runs.items():
        try:
            check_venue(venue, run)
        except AssertionError as e:
            failures[venue] = str(e)[:1500]
    print("ccxt unpatched and equal to the tape:", sorted(set(runs) - set(failures)))
    assert not failures, "\n".join(f"{v}: {m}" for v, m in failures.items())
