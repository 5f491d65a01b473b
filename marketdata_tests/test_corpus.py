"""Recorded and documented venue frames through each connector's own parser: the exact canonical
ticks (decimal text, taker side, trade id, µs) for older and newer shapes of each message, and
every other frame recognised as what it is (control frames ignored or acknowledged, data the
parser does not read counted as unrecognised). Independent of the simulator."""

from __future__ import annotations

import pytest

from marketdata import venues
from marketdata.tick import Tick

from .corpus_cases import load, run

CASES = [(v, c) for v in venues.names() for c in load(v)]


@pytest.mark.parametrize("venue,case", CASES, ids=[f"{v}:{c['name']}" for v, c in CASES])
def test_frame_decodes_to_the_expected_events(venue, case):
    got, events = run(venue, case)
    assert got == case["expect"], case["source"]
    for ev in events:
        for t in (ev.ticks if hasattr(ev, "ticks") else [getattr(ev, "tick", ev)]):
            if isinstance(t, Tick):
                assert t.exchange == venue and t.source == "ws" and t.recv_us > 0


@pytest.mark.parametrize("venue", venues.names())
def test_every_venue_has_documented_and_recorded_shapes_with_sources(venue):
    cases = load(venue)
    assert all(c["source"] for c in cases)
    trades = [c for c in cases if any(k in e for e in c["expect"] for k in ("tick", "replay", "unsequenced"))]
    assert len(trades) >= 3, "at least three trade frames per venue"
    assert {"older", "newer"} & {c["shape"] for c in trades}, "shapes are labelled"
    assert any(e.get("event") == "unrecognised" for c in cases for e in c["expect"]), \
        "a data frame the parser does not read is in the corpus, and counted"
