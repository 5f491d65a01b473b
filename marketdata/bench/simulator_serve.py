"""Measure what serving costs the simulator: its own CPU per offered trade and its send lag, with
every venue subscribed by one cheap raw-socket client that only drains bytes.

    python -m marketdata.bench.simulator_serve --rate 100000 --seconds 20 [--venues all] [--symbols 2]
        [--no-ground-truth] [--profile out.prof]

Starts ``python -m marketdata.simulator`` as a child process (paused, with a ground truth, the
same venues, symbols and per-venue rate split as ``marketdata bench``), opens one WebSocket per
venue from this process (handshake, the venue's own trade subscription, then read and discard:
no frame parsing, so the client costs little; server pings are pushed beyond the run with
``--ping-interval``), resumes every venue for ``--seconds``, pauses, and prints a JSON report:
trades offered per second, simulator CPU (% of one core and µs per trade), the send lag
(``send_lag_hist`` of ``/_sim/stats``: p50/p99 in ms), the rate deficit, the client's own CPU and
the load average (other processes share the machine). ``--profile`` runs the simulator under
cProfile and writes its stats there.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson

from ..procs import terminate
from ..simulator import sendlag
from ..simulator.core import SimulatorConfig, available_venues
from ..simulator.process import config_to_argv

#: two of these per venue by default, as ``marketdata bench`` offers them
SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT", "ADA-USDT"]
_QUOTE = {"kraken": "USD", "coinbase": "USD", "bitstamp": "USD", "bitfinex": "USD"}
_STOCKS = ["AAPL-USD", "MSFT-USD", "NVDA-USD", "AMZN-USD", "GOOGL-USD", "META-USD"]


def venue_symbols(venue: str, n: int) -> list[str]:
    if venue == "alpaca":
        return _STOCKS[:n]
    quote = _QUOTE.get(venue)
    return [s.rsplit("-", 1)[0] + "-" + quote if quote else s for s in SYMBOLS[:n]]


def _compact(sym: str, sep: str = "", lower: bool = False) -> str:
    s = sym.replace("-", sep)
    return s.lower() if lower else s


def subscription(venue: str, symbols: list[str]) -> tuple[str, list[dict]]:
    """WebSocket path and the messages a trade client sends (what the connectors send)."""
    if venue == "binance":
        return "/stream", [{"method": "SUBSCRIBE", "params": [f"{_compact(s, lower=True)}@trade" for s in symbols],
                            "id": 1}]
    if venue == "okx":
        return "/ws/v5/public", [{"id": "1", "op": "subscribe",
                                  "args": [{"channel": "trades", "instId": s} for s in symbols]}]
    if venue == "kucoin":
        return "", [{"id": "1", "type": "subscribe", "topic": "/market/match:" + ",".join(symbols),
                     "privateChannel": False, "response": True}]
    if venue == "kraken":
        return "/v2", [{"method": "subscribe", "params": {"channel": "trade", "symbol": [
            s.replace("-", "/") for s in symbols], "snapshot": True}, "req_id": 1}]
    if venue == "coinbase":
        return "/", [{"type": "subscribe", "product_ids": symbols, "channels": ["matches", "heartbeat"]}]
    if venue == "bybit":
        return "/v5/public/spot", [{"req_id": "sub-1", "op": "subscribe",
                                    "args": [f"publicTrade.{_compact(s)}" for s in symbols]}]
    if venue == "bitfinex":
        return "/ws/2", [{"event": "conf", "flags": 65536}] + [
            {"event": "subscribe", "channel": "trades", "symbol": "t" + _compact(s)} for s in symbols]
    if venue == "gateio":
        return "/ws/v4/", [{"time": int(time.time()), "id": 1, "channel": "spot.trades", "event": "subscribe",
                            "payload": [_compact(s, "_") for s in symbols]}]
    if venue == "bitstamp":
        return "/", [{"event": "bts:subscribe", "data": {"channel": f"live_trades_{_compact(s, lower=True)}"}}
                     for s in symbols]
    if venue == "alpaca":
        return "/v2/iex", [{"action": "auth", "key": "sim-key", "secret": "sim-secret"},
                           {"action": "subscribe", "trades": [s.split("-")[0] for s in symbols]}]
    raise ValueError(f"no drain subscription for {venue!r}")


def _masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Drain(asyncio.Protocol):
    """Reads and discards; counts bytes. The first chunk holds the 101 answer."""

    def __init__(self) -> None:
        self.bytes = 0
        self.head = b""
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end >= 0:
                self.upgraded.set_result(self.head[:end])
                self.bytes += len(self.head) - end - 4
            return
        self.bytes += len(data)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed during handshake"))


async def _open(venue: str, ws_url: str, rest_url: str, symbols: list[str]) -> _Drain:
    path, msgs = subscription(venue, symbols)
    if venue == "kucoin":
        async with httpx.AsyncClient() as c:
            data = (await c.post(rest_url + "/api/v1/bullet-public")).json()["data"]
        ws_url = data["instanceServers"][0]["endpoint"]
        host_port, _, p = ws_url.removeprefix("ws://").partition("/")
        path = f"/{p}?token={data['token']}&connectId=drain"
    else:
        host_port = ws_url.removeprefix("ws://")
    host, port = host_port.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    tr, proto = await loop.create_connection(_Drain, host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    tr.write(f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(proto.upgraded, 10)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"{venue}: handshake failed: {head!r}")
    for m in msgs:
        tr.write(_masked_text(orjson.dumps(m)))
    return proto


_PROFILED = """
import cProfile, sys, time
from marketdata.simulator.cli import main
out, argv = sys.argv[1], sys.argv[2:]
prof = cProfile.Profile(time.process_time)
try:
    prof.runcall(main, argv)
finally:
    prof.dump_stats(out)
"""


def _cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    venues = available_venues() if args.venues == "all" else [v.strip() for v in args.venues.split(",")]
    symbols = {v: venue_symbols(v, args.symbols) for v in venues}
    gt = None if args.no_ground_truth else os.path.join(args.workdir, "ground_truth.csv")
    cfg = SimulatorConfig(venues=venues, symbols=symbols, rate=args.rate / len(venues), seed=7,
                          ground_truth=gt, paused=True, slice_ms=args.slice_ms, ping_interval=3600.0, pong_timeout=0.0,
                          venue_options={"alpaca": {"sessions": "always"}} if "alpaca" in venues else {})
    argv = [*config_to_argv(cfg), "--endpoints-file", os.path.join(args.workdir, "endpoints.json")]
    if args.profile:    # CPU time, not wall time: on a shared machine wall time counts waiting too
        cmd = [sys.executable, "-c", _PROFILED, args.profile, *argv]
    else:
        cmd = [sys.executable, "-m", "marketdata.simulator", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        if not line:
            raise RuntimeError(f"simulator exited with {proc.wait()}")
        eps = json.loads(line)
        drains = {v: await _open(v, eps[v]["ws"], eps[v]["rest"], symbols[v]) for v in venues}
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.sleep(0.5)          # subscriptions answered
            load0 = os.getloadavg()
            c0, own0, b0 = _cpu_s(proc.pid), time.process_time(), sum(d.bytes for d in drains.values())
            w0 = time.monotonic()
            for v in venues:
                (await http.post(eps[v]["rest"] + "/_sim/resume")).raise_for_status()
            await asyncio.sleep(args.seconds)
            for v in venues:
                (await http.post(eps[v]["rest"] + "/_sim/pause")).raise_for_status()
            w1 = time.monotonic()
            c1, own1 = _cpu_s(proc.pid), time.process_time()
            await asyncio.sleep(0.3)          # the last writes arrive
            b1 = sum(d.bytes for d in drains.values())
            load1 = os.getloadavg()
            stats = {v: (await http.get(eps[v]["rest"] + "/_sim/stats")).json() for v in venues}
    finally:
        terminate(proc, 30)
    span = w1 - w0
    generated = sum(s["generated"] for s in stats.values())
    sent = sum(c["trades_sent"] for s in stats.values() for c in s["connections"] + s["closed_connections"])
    lag = sendlag.merge([s.get("send_lag_hist", {}) for s in stats.values()])
    p50, p99 = sendlag.quantiles_ms(lag)
    per_venue = {v: {"generated": s["generated"], "sent": sum(c["trades_sent"] for c in s["connections"] +
                                                           s["closed_connections"])} for v, s in stats.items()}
    closed = {v: [c["closed_reason"] for c in s["closed_connections"]] for v, s in stats.items()
              if s["closed_connections"]}
    cpu = c1[0] - c0[0] + c1[1] - c0[1]
    return {
        "venues": venues, "rate_asked": args.rate, "seconds": round(span, 2), "ground_truth": gt is not None,
        "offered_per_s": round(generated / span, 1), "sent_per_s": round(sent / span, 1),
        "drained_mb_per_s": round((b1 - b0) / span / 2**20, 2),
        "rate_deficit": sum(int(s.get("rate_deficit", 0)) for s in stats.values()),
        "simulator_cpu_pct_of_one_core": round(cpu / span * 100, 1),
        "simulator_cpu_us_per_trade": round(cpu / generated * 1e6, 2) if generated else None,
        "simulator_sys_cpu_share": round((c1[1] - c0[1]) / cpu, 2) if cpu else None,
        "simulator_lag_ms": {"p50": p50, "p99": p99},
        "drain_client_cpu_pct": round((own1 - own0) / span * 100, 1),
        "loadavg_1m_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "closed_connections": closed,
        "per_venue": per_venue,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m marketdata.bench.simulator_serve")
    ap.add_argument("--rate", type=float, default=100000, help="trades/s over all venues (split evenly)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--venues", default="all", help="comma list or 'all'")
    ap.add_argument("--symbols", type=int, default=2, help="symbols per venue")
    ap.add_argument("--no-ground-truth", action="store_true")
    ap.add_argument("--slice-ms", type=float, default=5.0, help="the simulator's generation step")
    ap.add_argument("--profile", default=None, metavar="PATH", help="run the simulator under cProfile")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="servecheck-") as tmp:
        args.workdir = args.workdir or tmp
        try:
            import uvloop  # type: ignore[import-not-found]

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        report = runner(_run(args))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
