"""Stock cryptofeed (2.4, from PyPI, in its own venv) against the simulator, for every venue it
supports in a way the simulator serves: only the endpoint addresses change (the feed class's own
`rest_endpoints` / `websocket_endpoints` objects, host replaced, path kept). cryptofeed accepts
only `wss://`, so it reaches the simulator through a local TLS front whose throwaway certificate
it trusts through `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE`. Each feed loads its symbols and
receives TRADES for two symbols; every trade equals the simulator's tape (id, price, amount,
side, timestamp), and between the first and last trade received per symbol none is missing.

Not run: KuCoin (cryptofeed hard-codes `https://api.kucoin.com/api/v1/bullet-public` in the feed's
constructor, so only patching code would redirect it) and Coinbase (cryptofeed 2.4 speaks the
Advanced Trade API, which the simulator does not serve; it serves the Exchange feed)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from decimal import Decimal

import pytest

from marketdata.simulator import Simulator, SimulatorConfig

from .client_venv import CLIENTS, client_python
from .tls_proxy import TlsProxy, self_signed_cert

pytestmark = pytest.mark.timeout(900)

FEEDS = {"binance": "Binance", "okx": "OKX", "kraken": "Kraken", "bybit": "Bybit", "bitfinex": "Bitfinex",
         "gateio": "Gateio", "bitstamp": "Bitstamp"}
SYMBOLS = {"binance": ["BTC-USDT", "ETH-USDT"], "okx": ["BTC-USDT", "ETH-USDT"], "kraken": ["BTC-USD", "ETH-USD"],
           "bybit": ["BTC-USDT", "ETH-USDT"], "bitfinex": ["BTC-USD", "ETH-USD"], "gateio": ["BTC-USDT", "ETH-USDT"],
           "bitstamp": ["BTC-USD", "SOL-USD"]}
MIN_TRADES = 15
WINDOW_S = 60.0


def cryptofeed_runs(tmp_path_factory):
    py = client_python("cryptofeed")
    tmp = tmp_path_factory.mktemp("cryptofeed")
    cert, key = self_signed_cert(tmp)
    sim = Simulator(SimulatorConfig(venues=list(SYMBOLS), symbols=SYMBOLS, rate=30, ping_interval=5,
                                    ground_truth=tmp / "gt.csv")).start()
    proxy = TlsProxy(cert, key)
    proc = None
    try:
        env = {**os.environ, "SSL_CERT_FILE": str(cert), "REQUESTS_CA_BUNDLE": str(cert)}
        t0 = time.monotonic()
        specs = {}
        for venue, syms in SYMBOLS.items():
            port = proxy.front(int(sim.endpoints[venue]["rest"].rsplit(":", 1)[1]))
            specs[venue] = {"exchange": FEEDS[venue], "rest": f"https://127.0.0.1:{port}",
                            "ws": f"wss://127.0.0.1:{port}", "symbols": syms, "min_trades": MIN_TRADES}
        proc = subprocess.Popen([str(py), str(CLIENTS / "cryptofeed_trades.py"), json.dumps(specs), str(WINDOW_S)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        stdout, stderr = proc.communicate(timeout=WINDOW_S + 120)
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        print(f"cryptofeed tier: {len(specs)} feeds in {time.monotonic() - t0:.1f}s wall")
        return {v: ([x for x in lines if x["venue"] == v], stderr, proc.returncode,
                    {s: sim.trades(v, s) for s in syms}) for v, syms in SYMBOLS.items()}
    finally:
        if proc is not None and proc.poll() is None:     # the client overran its window
            proc.kill()
            proc.wait()
        proxy.close()
        sim.stop()


def fill_ids(venue: str, trade: dict) -> list[str] | None:
    """The tape ids one received trade stands for; None where the wire carries no id (Kraken v1)."""
    if trade["id"] is None:
        return None
    if venue == "gateio":                 # platform id = id_market * 64 + pair index; the tape holds id_market
        return [str(int(trade["id"]) // 64)]
    if venue == "okx":                    # one push per taker order: tradeId = its last fill, `count` fills
        last, count = int(trade["id"]), int(trade["raw"].get("count") or 1)
        return [str(i) for i in range(last - count + 1, last + 1)]
    if venue == "binance":                # aggTrade: `a` is the aggregate id, fills f..l
        return [str(i) for i in range(int(trade["raw"]["f"]), int(trade["raw"]["l"]) + 1)]
    if venue == "bitstamp":               # cryptofeed reads the number `id`: exact only below 2^53
        return [trade["raw"]["id_str"]]
    return [trade["id"]]


def check_venue(venue: str, run) -> None:
    lines, stderr, rc, tapes = run
    assert rc == 0, stderr[-3000:]
    errors = [x["error"] for x in lines if "error" in x]
    assert not errors, errors[0]
    markets = next(line["markets"] for line in lines if "markets" in line)
    assert set(SYMBOLS[venue]) <= set(markets), markets
    done = next(line["done"] for line in lines if "done" in line)
    assert all(done.get(s, 0) >= MIN_TRADES for s in SYMBOLS[venue]), (done, stderr[-2000:])
    trades = [line["trade"] for line in lines if "trade" in line]
    for sym in SYMBOLS[venue]:
        tape = tapes[sym]
        got = [t for t in trades if t["symbol"] == sym]
        by_id = {r["trade_id"]: r for r in tape}
        pos = {r["trade_id"]: i for i, r in enumerate(tape)}
        mismatches, idx = [], []
        for k, t in enumerate(got):
            ids = fill_ids(venue, t)
            if ids is None:    # no id on the wire: the k-th trade received is the tape's next one
                if not idx:
                    first = [i for i, r in enumerate(tape) if (r["price"], r["ts_us"]) ==
                             (t["price"], round(t["timestamp"] * 1e6)) or
                             (Decimal(r["price"]) == Decimal(t["price"]) and abs(t["timestamp"] * 1e6 - r["ts_us"]) < 1)]
                    assert first, ("first trade not in the tape", t)
                    ids = [tape[first[0]]["trade_id"]]
                else:
                    ids = [tape[idx[-1] + 1]["trade_id"]]
            fills = [by_id.get(i) for i in ids]
            if None in fills:
                mismatches.append(("unknown id", t))
                continue
            idx += [pos[f["trade_id"]] for f in fills]
            r = fills[-1]
            want = (Decimal(r["price"]), sum(Decimal(f["qty"]) for f in fills), r["side"])
            have = (Decimal(t["price"]), Decimal(t["amount"]), t["side"])
            if want != have or abs(t["timestamp"] * 1e6 - r["ts_us"]) >= 1:
                mismatches.append((ids, want, r["ts_us"], have, t["timestamp"]))
            if venue == "bitstamp" and t["id"] != str(int(float(r["trade_id"]))):
                mismatches.append(("cryptofeed id is not the double of id_str", t["id"], r["trade_id"]))
        assert not mismatches, mismatches[:5]
        idx = sorted(set(idx))
        assert idx == list(range(idx[0], idx[-1] + 1)), "a trade inside the window was not received"


def test_stock_cryptofeed_loads_symbols_and_receives_the_tape(tmp_path_factory):
    """One run of every venue's client at once (one test, so parallel workers do not repeat it);
    the failures are reported per venue."""
    runs = cryptofeed_runs(tmp_path_factory)
    failures = {}
    for venue, run in runs.items():
        try:
            check_venue(venue, run)
        except AssertionError as e:
            failures[venue] = str(e)[:1500]
    print("cryptofeed unpatched and equal to the tape:", sorted(set(runs) - set(failures)))
    assert not failures, "\n".join(f"{v}: {m}" for v, m in failures.items())
