"""Stock ccxt.pro against given endpoints: load the markets, then `watch_trades` for the given
symbols until enough trades arrived or the time is up. Runs in the ccxt venv (no project imports).

argv[1]: JSON {"exchange", "config" (the constructor's config: `urls`, `options`), "symbols"
(ccxt unified symbols), "min_trades" (per symbol), "timeout" (s)}.
stdout: JSON lines {"markets": [...]}, then {"trade": {...}} per trade, then {"done": ...}.
"""

import asyncio
import json
import sys

import ccxt.pro as ccxtpro


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(spec: dict) -> int:
    ex = getattr(ccxtpro, spec["exchange"])(spec.get("config") or {})
    try:
        markets = await ex.load_markets()
        emit({"markets": sorted(markets)})
        counts = dict.fromkeys(spec["symbols"], 0)

        async def watch(symbol: str) -> None:
            while counts[symbol] < spec["min_trades"]:
                for t in await ex.watch_trades(symbol):
                    counts[symbol] += 1
                    emit({"trade": {k: t.get(k) for k in ("symbol", "id", "timestamp", "price", "amount", "side", "info")}})

        try:
            await asyncio.wait_for(asyncio.gather(*(watch(s) for s in spec["symbols"])), spec["timeout"])
        except asyncio.TimeoutError:
            emit({"timeout": counts})
        emit({"done": counts})
        return 0
    finally:
        await ex.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
