"""The one REST client (marketdata/rest/client.py), async and sync, against the Binance simulator's
REST over real sockets; and each venue's "wait" rule (venues/retry_after.py), read as data.

* every venue's RETRY_AFTER answers as its former ``retry_after`` function did: which statuses
  mean "wait", the default when the header is absent or unreadable, Kraken books ignoring it;
* both clients wait out 429 Retry-After (and 418) before answering, counting each wait, and the
  time they waited is the venue's;
* a 4xx other than those fails at once (one request, not "unreachable"); a venue that never
  answers fails after ``attempts`` as "unreachable";
* the sync client spends no more than its weight budget per minute window (pacing counted).
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from marketdata import venues as venue_registry
from marketdata.venues import book as venue_module
from marketdata.rest.client import AsyncVenueRest, RestError, VenueRest, retry_rule
from marketdata.venues.base import HttpRequest

from .harness import SimProc, platform_env, wait_for

EXCHANGE_INFO = HttpRequest("GET", "/api/v3/exchangeInfo")


def H(**kv) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in kv.items()})


# (status, headers) -> seconds, per venue: the table the former retry_after functions answered
CASES = {
    "binance": [(429, H(retry_after="7"), 7.0), (418, H(retry_after="120"), 120.0), (429, H(), 1.0),
                (403, H(retry_after="5"), None), (500, H(), None)],
    "bybit": [(403, H(), 1.0), (429, H(retry_after="2"), 2.0), (418, H(), None)],
    "alpaca": [(429, H(), 3.0), (429, H(retry_after="soon"), 3.0), (418, H(), None)],
    "bitfinex": [(429, H(), 60.0), (429, H(retry_after="4"), 4.0)],
    "okx": [(429, H(retry_after="2"), 2.0), (429, H(), 1.0), (418, H(), None)],
    "kucoin": [(429, H(), 1.0), (429, H(retry_after="30"), 30.0)],
    "kraken": [(429, H(retry_after="3"), 3.0), (503, H(), None)],
    "coinbase": [(429, H(), 1.0), (403, H(), None)],
    "gateio": [(429, H(retry_after="0"), 0.0)],
    "bitstamp": [(429, H(retry_after="x"), 1.0)],
}
BOOK_CASES = {
    "kraken": [(429, H(retry_after="9"), 1.0), (418, H(), None)],      # books ignore the header
    "binance": [(418, H(retry_after="9"), 9.0)],
    "okx": [(429, H(), 1.0)],
    "kucoin": [(429, H(retry_after="2"), 2.0)],
}


@pytest.mark.parametrize("venue", sorted(CASES))
def test_each_venue_rule_answers_as_the_venue_says(venue):
    rule = retry_rule(venue_registry.get(venue))
    for status, headers, want in CASES[venue]:
        assert rule.wait_s(status, headers) == want, (venue, status, dict(headers))


@pytest.mark.parametrize("venue", sorted(BOOK_CASES))
def test_each_book_rule_answers_as_the_venue_says(venue):
    rule = retry_rule(venue_module(venue))
    for status, headers, want in BOOK_CASES[venue]:
        assert rule.wait_s(status, headers) == want, (venue, status, dict(headers))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    env = platform_env(tmp, "redis://127.0.0.1:1/0", "http://127.0.0.1:9")
    s = SimProc(["simulate", "--venues", "binance", "--symbols", "BTC-USDT", "--rate", "50", "--seed", "3"],
                env, tmp)
    try:
        s.rest_url = s.endpoints["binance"]["rest"]
        wait_for(lambda: httpx.get(s.rest_url + "/api/v3/ping", timeout=2).status_code == 200, 20, "sim REST")
        yield s
    finally:
        s.stop()


def _call(kind: str, rest_url: str, req: HttpRequest, **kw):
    """(body or the RestError, client stats, seconds) through the sync or the async client."""
    t0 = time.monotonic()
    if kind == "sync":
        with VenueRest("binance", rest_url, **kw) as rest:
            try:
                out = rest.call(req)
            except RestError as e:
                out = e
            return out, rest.stats, time.monotonic() - t0

    async def go():
        rest = AsyncVenueRest("binance", rest_url, **kw)
        try:
            return await rest.call(req), rest.stats
        except RestError as e:
            return e, rest.stats
        finally:
            await rest.aclose()
    out, stats = asyncio.run(go())
    return out, stats, time.monotonic() - t0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_429_and_418_are_waited_out_as_the_venue_asks(sim, kind):
    sim.fault("binance", kind="rest_fail", status=429, retry_after=1, count=1)
    sim.fault("binance", kind="rest_fail", status=418, retry_after=1, count=1)
    body, stats, took = _call(kind, sim.rest_url, EXCHANGE_INFO)
    assert isinstance(body, dict) and any(s["symbol"] == "BTCUSDT" for s in body["symbols"])
    assert stats.rate_limited == 2 and stats.requests == 3 and stats.retry_wait_s == 2.0
    assert took >= 2.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_refusal_fails_at_once_and_silence_fails_as_unreachable(sim, kind):
    err, stats, _ = _call(kind, sim.rest_url, HttpRequest("GET", "/api/v3/depth", {"symbol": "NOPEUSDT"}))
    assert isinstance(err, RestError) and not err.unreachable and "HTTP 400" in str(err)
    assert stats.requests == 1

    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    err, stats, _ = _call(kind, dead, EXCHANGE_INFO, attempts=3)
    assert isinstance(err, RestError) and err.unreachable and "failed 3 times" in str(err)
    assert stats.requests == 3 and stats.retry_wait_s > 0


def test_the_weight_budget_paces_the_sync_client(sim):
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        time.sleep(s)
    # Weights far above the venue's own count (X-MBX-USED-WEIGHT-1M, which the client also takes):
    # a budget of 1,000,000 a minute, requests declared at 400,000.
    with VenueRest("binance", sim.rest_url, default_weight_limit=2_000_000, weight_fraction=0.5,
                   sleep=sleep) as rest:
        base = time.time()
        offset = (base // 60 + 1) * 60 - 1.0 - base          # our minute window ends 1 s from now
        rest.budget.clock = lambda: time.time() + offset
        req = HttpRequest("GET", "/api/v3/ping", weight=400_000)
        for _ in range(2):
            rest.call(req)
        assert rest.stats.throttled_s == 0                       # 800,000 of 1,000,000
        rest.call(req)                                            # waits for the next window
    assert 0.5 < rest.stats.throttled_s <= 1.1 and 0.5 < sum(slept) <= 1.2
    assert rest.stats.requests == 3 and rest.stats.weight == 1_200_000
