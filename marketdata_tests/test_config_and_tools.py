"""Bad config fails at start with a message that says what to fix; `decode` and `tail` work."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from marketdata.config import parse_config
from marketdata.errors import ConfigError
from marketdata.stream import encode_entry, stream_key
from marketdata.tick import Tick

from .harness import REPO, Proc, SimProc, platform_env, wait_for, write_config


def run_cli(args, env=None, stdin: str = "", timeout: float = 60):
    return subprocess.run([sys.executable, "-m", "marketdata.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=str(REPO), timeout=timeout)


@pytest.mark.parametrize("raw, needle", [
    ({"venues": {"binanse": {"symbols": ["BTC-USDT"]}}}, "unknown venue 'binanse'; valid venues: binance"),
    ({"venues": {"binance": {"symbols": ["btcusdt"]}}}, "not canonical: expected upper-case BASE-QUOTE"),
    ({"venues": {"binance": {"symbols": []}}}, "symbols must be a non-empty list"),
    ({"venues": {"binance": {"symbols": ["BTC-USDT"], "options": {"trade_stream": "kline"}}}},
     "trade_stream must be one of"),
    ({"venues": {"binance": {"symbols": ["BTC-USDT"], "colour": 1}}}, "unknown key(s) ['colour']"),
    ({"venues": {"binance": {"symbols": ["BTC-USDT"]}}, "endpoints": "prod"}, "endpoints must be"),
    ({"venues": {"binance": {"symbols": ["BTC-USDT"], "transport": "aiohttp"}}},
     "venues.binance.transport must be one of websockets, picows, not 'aiohttp'"),
])
def test_config_mistakes_name_what_to_fix(raw, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(raw, resolve_endpoints=False)
    assert needle in str(e.value)


def test_an_unknown_transport_in_the_environment_fails_the_start(monkeypatch):
    from marketdata.ingest.link import transport_for
    monkeypatch.setenv("MARKETDATA_WS_TRANSPORT", "tornado")
    with pytest.raises(ConfigError, match="MARKETDATA_WS_TRANSPORT: unknown WebSocket transport 'tornado'"):
        transport_for(None)
    assert transport_for("websockets") == "websockets"      # the venue's own setting wins
    monkeypatch.delenv("MARKETDATA_WS_TRANSPORT")
    assert transport_for(None) == "picows"


def test_ingest_with_a_symbol_the_venue_does_not_list_fails_at_start(tmp_path, redis_server):
    env = platform_env(tmp_path, redis_server.url, "http://127.0.0.1:9")
    sim = SimProc(["simulate", "--venues", "binance", "--symbols", "BTC-USDT", "--rate", "50"], env, tmp_path)
    try:
        eps = sim.endpoints["binance"]
        cfg = write_config(tmp_path / "bad.yaml", {"binance": {"symbols": ["BTC-USDT", "NOPE-USDT"],
                                                               "ws_url": eps["ws"], "rest_url": eps["rest"]}})
        r = run_cli(["ingest", "--venue", "binance", "--config", str(cfg)], env=env)
        assert r.returncode == 2, r.stderr
        assert "NOPE-USDT not listed as trading by the venue" in r.stderr
        assert "fix venues.binance.symbols" in r.stderr
    finally:
        sim.stop()


def test_decode_prints_canonical_ticks_and_reports_bad_frames():
    frames = "\n".join([
        '{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":3201883451,"p":"16800.01000000",'
        '"q":"0.00120000","T":1672515782134,"m":true,"M":true}',
        '{"stream":"ethusdt@trade","data":{"e":"trade","E":1,"s":"ETHUSDT","t":7,"p":"1200.5",'
        '"q":"2","T":1672515782135,"m":false,"M":true}}',
        '{"e":"trade","s":"BTCUSDT"',
        '{"e":"trade","E":1,"s":"DOGEUSDT","t":1,"p":"1","q":"1","T":1,"m":false,"M":true}',
        '{"result":null,"id":1}',
    ]) + "\n"
    r = run_cli(["decode", "--venue", "binance", "--symbols", "BTC-USDT,ETH-USDT"], stdin=frames)
    assert r.returncode == 0, r.stderr
    ticks = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert [t["symbol"] for t in ticks] == ["BTC-USDT", "ETH-USDT"]
    t = ticks[0]
    assert set(t) == {"exchange", "symbol", "ts_us", "open", "high", "low", "close", "volume", "trade_count",
                      "side", "trade_id", "recv_us", "source", "event"}
    assert (t["exchange"], t["ts_us"], t["close"], t["volume"], t["side"], t["trade_id"], t["trade_count"]) == \
        ("binance", 1672515782134000, "16800.01000000", "0.00120000", "sell", "3201883451", 1)
    assert ticks[1]["side"] == "buy"
    assert "binance: malformed frame 3" in r.stderr
    assert "binance: unknown symbol 'DOGEUSDT'" in r.stderr
    assert "5 frames, 2 ticks, 1 malformed, 1 unknown symbol" in r.stderr


def test_decode_okx_aggregated_trades_and_text_pong():
    frames = "\n".join([
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474",'
        '"px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3"}]}',
        "pong",
        '{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT"},"id":"1"}',
        '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT"}]}',
    ]) + "\n"
    r = run_cli(["decode", "--venue", "okx", "--symbols", "BTC-USDT"], stdin=frames)
    assert r.returncode == 0, r.stderr
    (t,) = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert (t["trade_id"], t["trade_count"], t["ts_us"], t["close"], t["side"]) == \
        ("130639474", 3, 1630048897897000, "42219.9", "buy")
    assert "okx: malformed frame 4" in r.stderr
    assert "4 frames, 1 ticks, 1 malformed" in r.stderr


def test_decode_rejects_unknown_venues_and_bad_options():
    r = run_cli(["decode", "--venue", "nope"], stdin="")
    assert r.returncode == 2 and "unknown venue 'nope'" in r.stderr and "kraken-v1" in r.stderr
    r = run_cli(["decode", "--venue", "okx", "--option", "ping_interval=99"], stdin="")
    assert r.returncode == 2 and "ping_interval must be" in r.stderr


def test_tail_prints_ticks_from_the_stream(tmp_path, redis_server, redis_client):
    ticks = [Tick.trade("binance", "BTC-USDT", 1_700_000_000_000_000 + i, "100.5", "0.1", "buy", str(i),
                        1_700_000_000_000_100 + i) for i in range(3)]
    redis_client.xadd(stream_key("binance", "BTC-USDT"),
                      encode_entry("binance", "BTC-USDT", ticks, (1_700_000_000_000_000, 1_700_000_000_000_001, "ws")))
    env = platform_env(tmp_path, redis_server.url, "http://127.0.0.1:9")
    r = run_cli(["tail", "binance:BTC-USDT", "--from-start", "-n", "3"], env=env)
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(x) for x in r.stdout.splitlines()]
    got = [x for x in lines if "trade_id" in x]
    assert [g["trade_id"] for g in got] == ["0", "1", "2"]
    assert {"coverage": [1_700_000_000_000_000, 1_700_000_000_000_001], "exchange": "binance",
            "symbol": "BTC-USDT"} in lines
    assert got[0]["close"] == "100.5" and got[0]["symbol"] == "BTC-USDT"


def test_kraken_book_depth_is_a_venue_option():
    from marketdata.config import parse_config
    from marketdata.errors import ConfigError

    venue = {"symbols": ["BTC-USD"], "ws_url": "ws://x", "rest_url": "http://x", "books": True}
    cfg = parse_config({"venues": {"kraken": {**venue, "options": {"book_depth": 25}}}}, resolve_endpoints=False)
    assert cfg.venues["kraken"].options["book_depth"] == 25
    with pytest.raises(ConfigError, match=r"book_depth must be one of \[10, 25, 100, 500, 1000\]"):
        parse_config({"venues": {"kraken": {**venue, "options": {"book_depth": 7}}}}, resolve_endpoints=False)
