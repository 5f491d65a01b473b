"""Helpers shared by the venue simulator tests (plain websockets / httpx clients, no project code
besides the simulator itself)."""

from __future__ import annotations

import asyncio
import csv
import time

import orjson
from websockets.asyncio.client import connect

from marketdata.simulator import Simulator, SimulatorConfig, parse_time_us

START = "2026-01-05T10:00:00Z"
START_US = parse_time_us(START)


class SimFactory:
    def __init__(self, tmp_path, venue: str, symbols: list[str]) -> None:
        self.tmp_path = tmp_path
        self.venue = venue
        self.symbols = symbols
        self.sims: list[Simulator] = []

    def __call__(self, **kw) -> Simulator:
        kw.setdefault("venues", [self.venue])
        kw.setdefault("symbols", self.symbols)
        kw.setdefault("start", START)
        kw.setdefault("speed", 60)
        kw.setdefault("rate", 2000)
        kw.setdefault("ground_truth", self.tmp_path / f"gt-{len(self.sims)}.csv")
        sim = Simulator(SimulatorConfig(**kw)).start()
        self.sims.append(sim)
        return sim

    def close(self) -> None:
        for s in self.sims:
            s.stop()


def ws_connect(url: str):
    return connect(url, compression=None, ping_interval=None, max_size=None, close_timeout=0.5, open_timeout=5)


async def recv_text(ws, timeout: float = 5.0) -> str:
    return await asyncio.wait_for(ws.recv(), timeout)


async def recv_json(ws, timeout: float = 5.0):
    return orjson.loads(await recv_text(ws, timeout))


def read_gt(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def conn_id(sim: Simulator, venue: str, ws) -> int:
    port = ws.local_address[1]
    for c in sim.stats(venue)["connections"]:
        if c["peer"].endswith(f":{port}"):
            return c["conn"]
    raise AssertionError("connection not found in stats")


def conn_stats(sim: Simulator, venue: str, cid: int) -> dict:
    st = sim.stats(venue)
    for c in st["connections"] + st["closed_connections"]:
        if c["conn"] == cid:
            return c
    raise AssertionError(f"no connection {cid}")


def wait_until(pred, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# ------------------------------------------------------------------ an independent CRC32 (IEEE)
_CRC_TABLE: list[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (0xEDB88320 ^ (_c >> 1)) if _c & 1 else (_c >> 1)
    _CRC_TABLE.append(_c)


def crc32(data: bytes) -> int:
    """Table-driven CRC-32 (reflected, poly 0xEDB88320), written here rather than using zlib."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32_signed(data: bytes) -> int:
    v = crc32(data)
    return v - (1 << 32) if v & 0x80000000 else v
