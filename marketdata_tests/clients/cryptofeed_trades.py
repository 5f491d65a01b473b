"""Stock cryptofeed against given endpoints, several venues in one FeedHandler (one process): each
feed class's REST and WebSocket endpoint addresses get a new host (path and query kept, by
`dataclasses.replace` on the library's own endpoint objects), nothing else; then TRADES for the
given symbols until every venue has enough or the time is up. Runs in the cryptofeed venv (no
project imports).

argv[1]: JSON {venue: {"exchange" (cryptofeed class name), "rest", "ws" (base URLs), "symbols"
(cryptofeed symbols), "min_trades" (per symbol)}}; argv[2]: timeout (s).
stdout: JSON lines, each with "venue": {"markets": [...]}, {"trade": {...}}, {"done": {...}} or
{"error": "..."}.
"""

import asyncio
import dataclasses
import json
import sys
import traceback
from urllib.parse import urlsplit

import cryptofeed.exchanges as exchanges
from cryptofeed import FeedHandler
from cryptofeed.defines import TRADES


def emit(venue: str, obj) -> None:
    sys.stdout.write(json.dumps({"venue": venue, **obj}) + "\n")
    sys.stdout.flush()


def pointed_at(cls, rest: str, ws: str):
    """`cls` with the host of each endpoint address replaced (path and query kept), nothing else."""
    def moved(base: str, address: str) -> str:
        u = urlsplit(address)
        return base + u.path + (f"?{u.query}" if u.query else "")
    ws_eps = [dataclasses.replace(ep, address=moved(ws, ep.address)) for ep in cls.websocket_endpoints]
    rest_eps = [dataclasses.replace(ep, address=moved(rest, ep.address)) for ep in cls.rest_endpoints]
    return type(cls.__name__, (cls,), {"websocket_endpoints": ws_eps, "rest_endpoints": rest_eps})


async def main(specs: dict, timeout: float) -> int:
    fh = FeedHandler(config={"log": {"disabled": True}})
    counts = {v: dict.fromkeys(s["symbols"], 0) for v, s in specs.items()}
    enough = asyncio.Event()

    def callback(venue: str):
        async def on_trade(t, receipt_ts):
            raw = t.raw if isinstance(t.raw, dict) else {}
            raw = raw["data"] if isinstance(raw.get("data"), dict) else raw
            counts[venue][t.symbol] = counts[venue].get(t.symbol, 0) + 1
            emit(venue, {"trade": {"symbol": t.symbol, "id": None if t.id is None else str(t.id),
                                   "price": str(t.price), "amount": str(t.amount), "side": t.side,
                                   "timestamp": t.timestamp,
                                   "raw": {k: raw.get(k) for k in ("count", "id_str", "f", "l") if k in raw}}})
            if all(n >= specs[v]["min_trades"] for v, c in counts.items() for n in c.values()):
                enough.set()
        return on_trade

    for venue, spec in specs.items():
        try:
            cls = pointed_at(getattr(exchanges, spec["exchange"]), spec["rest"], spec["ws"])
            emit(venue, {"markets": sorted(cls.symbols())})
            fh.add_feed(cls(symbols=spec["symbols"], channels=[TRADES], callbacks={TRADES: callback(venue)}))
        except Exception:
            emit(venue, {"error": traceback.format_exc()[-3000:]})
            counts[venue] = {}
    fh.run(start_loop=False, install_signal_handlers=False)
    try:
        await asyncio.wait_for(enough.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    for venue in specs:
        emit(venue, {"done": counts[venue]})
    await fh.stop_async()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]), float(sys.argv[2]))))
