"""Measure the simulator's CPU cost while one connection receives at a given rate.

    python -m marketdata.bench.simulator_load --rate 50000 --seconds 15 [--streams trade,aggTrade]

Starts ``python -m marketdata.simulator`` as a child process, connects one minimal raw WebSocket
client (answers pings, counts frames, checks that Binance trade ids are consecutive per symbol),
and prints a JSON report: delivered trades/s, simulator CPU % of one core, RSS, drops.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from typing import Any

import orjson

from ..simulator.core import SimulatorConfig
from ..simulator.process import SimulatorProcess


async def _client(host: str, port: int, path: str, seconds: float, check: bool) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"handshake failed: {head!r}")
    frames = trades = pings = gaps = 0
    last: dict[str, int] = {}
    buf = bytearray()
    t0 = time.monotonic()
    first_at = None
    deadline = t0 + seconds
    closed = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            data = await asyncio.wait_for(reader.read(1 << 20), left)
        except asyncio.TimeoutError:
            break
        if not data:
            closed = "eof"
            break
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            off = pos + 2
            if ln == 126:
                if n - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                off = pos + 4
            elif ln == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                off = pos + 10
            if n < off + ln:
                break
            op = b0 & 0x0F
            if op == 0x1:
                frames += 1
                if first_at is None:
                    first_at = time.monotonic()
                if check:
                    msg = orjson.loads(bytes(buf[off:off + ln]))
                    d = msg.get("data", msg)
                    if d.get("e") == "trade":
                        trades += 1
                        s, t = d["s"], d["t"]
                        p = last.get(s)
                        if p is not None and t != p + 1:
                            gaps += 1
                        last[s] = t
                else:
                    trades += 1
            elif op == 0x9:
                pings += 1
                payload = bytes(buf[off:off + ln])
                mask = os.urandom(4)
                writer.write(bytes((0x8A, 0x80 | len(payload))) + mask
                             + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            elif op == 0x8:
                closed = "close_frame"
            pos = off + ln
        del buf[:pos]
        if closed:
            break
    elapsed = time.monotonic() - (first_at or t0)
    writer.close()
    return {"frames": frames, "trades": trades, "gaps": gaps, "pings": pings, "closed": closed,
            "elapsed_s": round(elapsed, 3), "trades_per_s": round(trades / elapsed, 1) if elapsed else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m marketdata.bench.simulator_load")
    ap.add_argument("--rate", type=float, default=50000)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--symbols", default="BTC-USDT,ETH-USDT")
    ap.add_argument("--streams", default="trade", help="trade, aggTrade or trade,aggTrade")
    ap.add_argument("--no-check", action="store_true", help="do not parse frames in the client")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--ground-truth", default=None)
    args = ap.parse_args(argv)
    import psutil

    syms = [s.strip() for s in args.symbols.split(",") if s.strip()]
    cfg = SimulatorConfig(venues=["binance"], symbols=syms, rate=args.rate, start="2026-01-05T10:00:00Z",
                          speed=1.0, ground_truth=args.ground_truth, use_uvloop=not args.no_uvloop)
    streams = [f"{s.replace('-', '').lower()}@{k}" for s in syms for k in args.streams.split(",")]
    with SimulatorProcess(cfg) as proc:
        ep = proc.endpoints["binance"]["ws"]
        host, port = ep.removeprefix("ws://").rsplit(":", 1)
        ps = psutil.Process(proc.pid)
        time.sleep(1.0)  # let it warm up
        c0 = ps.cpu_times()
        w0 = time.monotonic()
        res = asyncio.run(_client(host, int(port), "/stream?streams=" + "/".join(streams), args.seconds,
                                  not args.no_check))
        c1 = ps.cpu_times()
        w1 = time.monotonic()
        stats = proc.stats("binance")
        rss = ps.memory_info().rss
    cpu = (c1.user - c0.user + c1.system - c0.system) / (w1 - w0)
    conn = (stats["connections"] + stats["closed_connections"])[-1] if (
        stats["connections"] or stats["closed_connections"]) else {}
    report = {
        "rate": args.rate, "streams": streams, "client": res,
        "simulator_cpu_pct_of_one_core": round(cpu * 100, 1),
        "simulator_rss_mb": round(rss / 2**20, 1),
        "generated": stats["generated"], "rate_deficit": stats["rate_deficit"],
        "conn_closed_reason": conn.get("closed_reason"), "conn_max_write_buffer": conn.get("max_write_buffer"),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
