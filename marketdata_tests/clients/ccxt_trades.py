"""Stock ccxt.pro against given endpoints, several venues at once in one process (one import of
ccxt): per venue, load the markets, then `watch_trades` for the given symbols until enough trades
arrived or the time is up. Runs in the ccxt venv (no project imports).

argv[1]: JSON {venue: {"exchange", "config" (the constructor's config: `urls`), "symbols" (ccxt
unified symbols), "min_trades" (per symbol), "timeout" (s)}}.
stdout: JSON lines, each with "venue": {"markets": [...]}, {"trade": {...}} per trade,
{"done": {...}} or {"error": "..."}.
"""

import asyncio
import json
import sys
import traceback

import ccxt.pro as ccxtpro


def emit(venue: str, obj) -> None:
    sys.stdout.write(json.dumps({"venue": venue, **obj}) + "\n")
    sys.stdout.flush()


async def run(venue: str, spec: dict) -> None:
    ex = getattr(ccxtpro, spec["exchange"])(spec.get("config") or {})
    try:
        markets = await ex.load_markets()
        emit(venue, {"markets": sorted(markets)})
        counts = dict.fromkeys(spec["symbols"], 0)

        async def watch(symbol: str) -> None:
            while counts[symbol] < spec["min_trades"]:
                for t in await ex.watch_trades(symbol):
                    counts[symbol] += 1
                    emit(venue, {"trade": {k: t.get(k) for k in ("symbol", "id", "timestamp", "price", "amount",
                                                                  "side", "info")}})

        try:
            await asyncio.wait_for(asyncio.gather(*(watch(s) for s in spec["symbols"])), spec["timeout"])
        except asyncio.TimeoutError:
            emit(venue, {"timeout": counts})
        emit(venue, {"done": counts})
    except Exception:
        emit(venue, {"error": traceback.format_exc()[-3000:]})
    finally:
        await ex.close()


async def main(specs: dict) -> int:
    await asyncio.gather(*(run(v, s) for v, s in specs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
