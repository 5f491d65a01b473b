"""`marketdata decode` on real frames: the three shapes it used to pass over (Bitfinex's trades
snapshot, Gate.io pushes without id_market, OKX trades-all) come out as ticks, and a data frame
the parser does not read is counted and reported, never silently skipped."""

from __future__ import annotations

import io

import orjson

from marketdata.tools import decode

from .corpus_cases import load


def _case(venue: str, name: str) -> dict:
    return next(c for c in load(venue) if c["name"] == name)


def _decode(venue: str, case: dict, extra: list[str] = ()):
    out, err = io.StringIO(), io.StringIO()
    lines = case["setup"] + [case["frame"], *extra]
    counts = decode(venue, case["symbols"], io.StringIO("\n".join(lines) + "\n"), out, err, case["options"])
    return counts, [orjson.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_bitfinex_snapshot_trades_are_printed():
    case = _case("bitfinex", "rec-snapshot-bftusd")
    counts, ticks, _ = _decode("bitfinex", case)
    assert counts["ticks"] == len(case["expect"][0]["replay"]) == len(ticks) > 20
    assert [t["trade_id"] for t in ticks] == [t["trade_id"] for t in case["expect"][0]["replay"]]


def test_gateio_pushes_without_id_market_are_ticks_and_counted_as_such():
    case = _case("gateio", "rec-2021-dis-usdt")
    counts, ticks, _ = _decode("gateio", case)
    assert counts["ticks"] == 1 and counts["unsequenced"] == 1 and counts["malformed"] == 0
    assert ticks[0]["trade_id"] == "816995772" and ticks[0]["close"] == "121.5800000000"


def test_okx_trades_all_is_decoded_and_an_unread_channel_is_reported():
    case = _case("okx", "doc-trades-all")
    tickers = _case("okx", "rec-tickers-unrecognised")["frame"]
    counts, ticks, err = _decode("okx", case, [tickers])
    assert counts["ticks"] == 1 and ticks[0]["trade_id"] == "130639474"
    assert counts["unrecognised"] == 1 and "not recognised (channel tickers" in err
