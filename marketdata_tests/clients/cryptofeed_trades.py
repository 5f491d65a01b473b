"""Stock cryptofeed against given endpoints: the feed class's REST and WebSocket endpoint
addresses are replaced (only the addresses: `dataclasses.replace` on its `rest_endpoints` /
`websocket_endpoints`, the library's own endpoint objects), then a FeedHandler receives TRADES for
the given symbols until enough arrived or the time is up. Runs in the cryptofeed venv (no project
imports).

argv[1]: JSON {"exchange" (cryptofeed class name), "rest", "ws" (base URLs), "ws_path" (appended
to ws), "symbols" (cryptofeed symbols), "min_trades" (per symbol), "timeout" (s)}.
stdout: JSON lines {"markets": [...]}, {"trade": {...}} per trade, {"done": {...}}.
"""

import asyncio
import dataclasses
import json
import sys
from urllib.parse import urlsplit

import cryptofeed.exchanges as exchanges
from cryptofeed import FeedHandler
from cryptofeed.defines import TRADES


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def pointed_at(cls, rest: str, ws: str):
    """`cls` with the host of each endpoint address replaced (path and query kept), nothing else."""
    def moved(base: str, address: str) -> str:
        u = urlsplit(address)
        return base + u.path + (f"?{u.query}" if u.query else "")
    ws_eps = [dataclasses.replace(ep, address=moved(ws, ep.address)) for ep in cls.websocket_endpoints]
    rest_eps = [dataclasses.replace(ep, address=moved(rest, ep.address)) for ep in cls.rest_endpoints]
    return type(cls.__name__, (cls,), {"websocket_endpoints": ws_eps, "rest_endpoints": rest_eps})


async def main(spec: dict) -> int:
    cls = pointed_at(getattr(exchanges, spec["exchange"]), spec["rest"], spec["ws"])
    counts = dict.fromkeys(spec["symbols"], 0)
    enough = asyncio.Event()

    async def on_trade(t, receipt_ts):
        counts[t.symbol] = counts.get(t.symbol, 0) + 1
        raw = t.raw if isinstance(t.raw, dict) else {}
        raw = raw["data"] if isinstance(raw.get("data"), dict) else raw
        emit({"trade": {"symbol": t.symbol, "id": None if t.id is None else str(t.id), "price": str(t.price),
                        "amount": str(t.amount), "side": t.side, "timestamp": t.timestamp,
                        "raw": {k: raw.get(k) for k in ("count", "id_str", "f", "l") if k in raw}}})
        if all(n >= spec["min_trades"] for n in counts.values()):
            enough.set()

    emit({"markets": sorted(cls.symbols())})
    fh = FeedHandler(config={"log": {"disabled": True}})
    fh.add_feed(cls(symbols=spec["symbols"], channels=[TRADES], callbacks={TRADES: on_trade}))
    fh.run(start_loop=False, install_signal_handlers=False)
    try:
        await asyncio.wait_for(enough.wait(), spec["timeout"])
    except asyncio.TimeoutError:
        emit({"timeout": counts})
    emit({"done": counts})
    await fh.stop_async()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
