"""The REST a stock client calls when it loads its markets, on every simulated venue: Bybit's
other instrument categories, Bitfinex's comma-joined conf keys, Bitstamp's markets, the currency
lists, and unknown paths answered in the venue's own JSON error shape (never aiohttp's text)."""

from __future__ import annotations

import httpx
import pytest

from marketdata.simulator import Simulator, SimulatorConfig

SYMBOLS = {"binance": ["BTC-USDT"], "okx": ["BTC-USDT"], "kucoin": ["BTC-USDT", "ETH-USDT"],
           "kraken": ["BTC-USD", "ETH-USD"], "coinbase": ["BTC-USD", "ETH-USD"], "bybit": ["BTC-USDT"],
           "bitfinex": ["BTC-USD", "ETH-USDT"], "gateio": ["BTC-USDT", "ETH-USDT"], "bitstamp": ["BTC-USD"],
           "alpaca": ["AAPL-USD"]}


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
    sim = Simulator(SimulatorConfig(venues=list(SYMBOLS), symbols=SYMBOLS, rate=20,
                                    ground_truth=tmp_path_factory.mktemp("ep") / "gt.csv")).start()
    with httpx.Client(timeout=10) as c:
        yield lambda venue, path, **q: c.get(sim.endpoints[venue]["rest"] + path, params=q)
    sim.stop()


NOT_FOUND = {"binance": {"code": -1000, "msg": "Not Found"}, "kucoin": {"code": "404000", "msg": "Not Found"},
             "kraken": {"error": ["EGeneral:Unknown method"]}, "coinbase": {"message": "NotFound"},
             "bitfinex": ["error", 10020, "not found"], "gateio": {"label": "NOT_FOUND", "message": "Not Found"},
             "bitstamp": {"status": "error", "reason": "Not Found", "code": "404.000"},
             "alpaca": {"message": "endpoint not found"}}


@pytest.mark.parametrize("venue", list(SYMBOLS))
def test_unknown_paths_answer_the_venues_json_error(rest, venue):
    r = rest(venue, "/no/such/path")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    if venue == "bybit":
        assert body["retCode"] == 10001 and body["result"] == {}
    elif venue in NOT_FOUND:
        assert body == NOT_FOUND[venue]
    else:                                  # okx: the base shape
        assert body == {"code": 404, "msg": "Not Found"}


def test_bybit_serves_every_instrument_category(rest):
    for cat in ("linear", "inverse", "option"):
        body = rest("bybit", "/v5/market/instruments-info", category=cat).json()
        assert body["retCode"] == 0 and body["result"] == {"category": cat, "list": [], "nextPageCursor": ""}
    spot = rest("bybit", "/v5/market/instruments-info", category="spot").json()["result"]["list"]
    assert "BTCUSDT" in {i["symbol"] for i in spot}
    assert rest("bybit", "/v5/market/instruments-info", category="nope").json()["retCode"] == 10001


def test_bitfinex_conf_answers_comma_joined_keys_in_order(rest):
    keys = ["pub:info:pair", "pub:info:pair:futures", "pub:list:pair:securities", "pub:list:pair:margin",
            "pub:list:pair:exchange", "pub:list:pair:futures", "pub:list:currency", "pub:map:currency:sym",
            "pub:map:currency:label", "pub:map:tx:method", "pub:info:tx:status"]
    body = rest("bitfinex", "/v2/conf/" + ",".join(keys)).json()
    assert len(body) == len(keys)
    info, fut_info, securities, margin, exchange, futures, ccys, sym_map, labels, methods, statuses = body
    assert [p for p, _ in info] == ["BTCUSD", "ETHUST"] and all(len(v) == 10 for _, v in info)
    assert fut_info == [] and securities == [] and futures == []
    assert margin == exchange == ["BTCUSD", "ETHUST"]
    assert ccys == ["BTC", "ETH", "USD", "UST"] and ["UST", "USDT"] in sym_map
    assert dict(labels)["BTC"] == "Bitcoin" and ["BITCOIN", ["BTC"]] in methods
    assert all(s[1] == 1 and s[2] == 1 for s in statuses)
    assert rest("bitfinex", "/v2/conf/pub:list:pair:exchange").json() == [["BTCUSD", "ETHUST"]]
    bad = rest("bitfinex", "/v2/conf/pub:list:pair:exchange,pub:nope")
    assert bad.status_code == 500 and bad.json()[:2] == ["error", 10020]


def test_currency_lists(rest):
    assert [c["currency"] for c in rest("kucoin", "/api/v3/currencies").json()["data"]] == ["BTC", "ETH", "USDT"]
    assert rest("kucoin", "/api/v1/contracts/active").json() == {"code": "200000", "data": []}
    assets = rest("kraken", "/0/public/Assets").json()
    assert assets["error"] == [] and {k: v["altname"] for k, v in assets["result"].items()} == \
        {"XETH": "ETH", "XXBT": "XBT", "ZUSD": "USD"}
    assert [c["id"] for c in rest("coinbase", "/currencies").json()] == ["BTC", "ETH", "USD"]
    assert [c["currency"] for c in rest("gateio", "/api/v4/spot/currencies").json()] == ["BTC", "ETH", "USDT"]
    margin = rest("gateio", "/api/v4/margin/currency_pairs").json()
    assert [(m["id"], m["status"]) for m in margin] == [("BTC_USDT", 1), ("ETH_USDT", 1)]
    assert rest("gateio", "/api/v4/futures/usdt/contracts").json() == []
    markets = rest("bitstamp", "/api/v2/markets/").json()
    assert [(m["market_symbol"], m["market_type"]) for m in markets if m["trading"] == "Enabled"] == [("btcusd", "SPOT")]
