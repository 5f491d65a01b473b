"""Property-based fuzzing of every venue parser (hypothesis).

Inputs are mutated versions of the recorded corpus frames (marketdata_tests/corpus/): fields
dropped, retyped or renamed, values wrapped, containers emptied, frames truncated, other
venues' frames, random text and random bytes, fed one to three at a time into one parser (so
per-connection state such as channel ids and sequence numbers is exercised too). The parser
may only ever return its own events -- ticks that are well-formed canonical ticks, or the
control/unknown/unrecognised events of marketdata.venues.base -- or raise MalformedFrame.
Anything else (a TypeError, a tick with a number where text belongs) fails the test.

Cases per venue: MARKETDATA_FUZZ_EXAMPLES (default 300). Runs are derandomized so CI is
repeatable; set MARKETDATA_FUZZ_SEED to explore other inputs. `--hypothesis-show-statistics`
prints how many cases each venue ran.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from marketdata import venues
from marketdata.tick import Tick
from marketdata.venues.base import MAX_TS_US, PARSER_EVENTS, LastTradeId, MalformedFrame, Replay, Unsequenced

from .corpus_cases import RECV_US, load, parser_for

EXAMPLES = int(os.environ.get("MARKETDATA_FUZZ_EXAMPLES", "300"))
SEED = os.environ.get("MARKETDATA_FUZZ_SEED")
CORPUS = {v: load(v) for v in venues.names()}
ALL_FRAMES = sorted({c["frame"] for cs in CORPUS.values() for c in cs} | {f for cs in CORPUS.values() for c in cs
                                                                          for f in c["setup"]})
RAN: dict[str, int] = {}

_DECIMAL = re.compile(r"\d+(\.\d+)?")
_WORDS = ["", "0", "-1", "1e-05", "NaN", "Infinity", "buy", "sell", "Buy", "Sell", "b", "s", "trade", "te", "tu",
          "hb", "update", "subscribe", "subscribed", "message", "match", "t", "c", "x", "publicTrade.BTCUSDT",
          "spot.trades", "trades", "trades-all", "1606292218213.4578", "2021-02-22T15:51:44.208Z",
          "2021-02-22T15:51:44.208", "1618678142.557535", "BTC-USDT", "BTCUSDT", "BTC_USDT", "XBT/USD", "tBTCUSD",
          "\u0663", "\x00", "１２３"]
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=12),
                   st.sampled_from(_WORDS))
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                      max_leaves=6)


def _paths(v, p=()):
    yield p
    if isinstance(v, dict):
        for k, c in v.items():
            yield from _paths(c, p + (k,))
    elif isinstance(v, list):
        for i, c in enumerate(v):
            yield from _paths(c, p + (i,))


def _mutate_once(doc, data):
    """One structural mutation at a random place: drop, retype, rename, wrap, stringify, empty."""
    paths = list(_paths(doc))
    path = data.draw(st.sampled_from(paths), label="path")
    op = data.draw(st.sampled_from(["drop", "retype", "rename", "wrap", "stringify", "numberify", "empty", "dup"]),
                   label="op")
    if not path:
        if op in ("wrap", "dup"):
            return [doc] if op == "wrap" else [doc, doc]
        return data.draw(VALUES, label="root") if op in ("retype", "empty") else doc
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    val = parent[key]
    if op == "drop":
        del parent[key]
    elif op == "retype":
        parent[key] = data.draw(VALUES, label="value")
    elif op == "rename" and isinstance(parent, dict):
        new = data.draw(st.one_of(st.text(max_size=6), st.just(str(key).upper()), st.just(str(key) + "_")), label="key")
        parent[new] = parent.pop(key)
    elif op == "wrap":
        parent[key] = [val]
    elif op == "stringify":
        parent[key] = json.dumps(val) if not isinstance(val, str) else val + data.draw(st.text(max_size=3))
    elif op == "numberify":
        parent[key] = data.draw(st.one_of(st.integers(-10, 2 ** 64), st.floats(-1e20, 1e20)), label="number")
    elif op == "empty":
        parent[key] = type(val)() if isinstance(val, (list, dict, str)) else None
    elif op == "dup" and isinstance(parent, list):
        parent.insert(key, val)
    return doc


def _mutated(frame: str, data) -> str | bytes:
    kind = data.draw(st.sampled_from(["json", "json", "json", "truncate", "other", "text", "bytes", "same"]), label="kind")
    if kind == "truncate":
        return frame[:data.draw(st.integers(0, max(0, len(frame) - 1)), label="cut")]
    if kind == "other":
        return data.draw(st.sampled_from(ALL_FRAMES), label="other venue's frame")
    if kind == "text":
        return data.draw(st.text(max_size=200), label="text")
    if kind == "bytes":
        return data.draw(st.binary(max_size=200), label="bytes")
    if kind == "same":
        return frame
    try:
        doc = json.loads(frame)
    except ValueError:
        return frame[::-1]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        doc = _mutate_once(doc, data)
    return json.dumps(doc, ensure_ascii=data.draw(st.booleans(), label="ascii"), allow_nan=True)


def _check_tick(t: Tick, venue: str) -> None:
    assert type(t) is Tick and t.exchange == venue
    assert type(t.ts_us) is int and 0 < t.ts_us < MAX_TS_US, t
    for f in (t.open, t.high, t.low, t.close, t.volume):
        assert type(f) is str and _DECIMAL.fullmatch(f), t
    assert t.side in ("buy", "sell", "unknown"), t
    assert type(t.trade_id) is str and t.trade_id, t
    assert type(t.trade_count) is int and t.trade_count >= 1, t
    assert t.event in ("trade", "correct", "cancel"), t


def _check(events, venue: str) -> None:
    assert type(events) is list
    for ev in events:
        assert isinstance(ev, PARSER_EVENTS), ev
        if type(ev) is Tick:
            _check_tick(ev, venue)
        elif type(ev) is Replay:
            for t in ev.ticks:
                _check_tick(t, venue)
        elif type(ev) is Unsequenced:
            _check_tick(ev.tick, venue)
        elif type(ev) is LastTradeId:
            assert type(ev.trade_id) is int and type(ev.ts_us) is int


def _feed(parser, frame, venue: str) -> None:
    try:
        events = parser.parse(frame, RECV_US)
    except MalformedFrame:
        return
    _check(events, venue)


def _fuzz(venue: str):
    cases = CORPUS[venue]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def run(data):
        case = data.draw(st.sampled_from(cases), label="seed case")
        parser = parser_for(venue, case)
        for f in case["setup"]:
            _feed(parser, _mutated(f, data) if data.draw(st.booleans(), label="mutate setup") else f, venue)
        for _ in range(data.draw(st.integers(1, 3), label="frames")):
            _feed(parser, _mutated(case["frame"], data), venue)
        RAN[venue] += 1         # a completed case (hypothesis discards draws that overrun)

    return seed(int(SEED))(run) if SEED is not None else run


@pytest.mark.parametrize("venue", venues.names())
def test_parser_only_emits_its_own_events(venue):
    RAN[venue] = 0
    _fuzz(venue)()
    assert RAN[venue] >= EXAMPLES, f"{venue}: only {RAN[venue]} cases ran"
    print(f"{venue}: {RAN[venue]} fuzz cases")
