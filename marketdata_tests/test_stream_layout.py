"""The stream entry format's exported layout is the one the encoder writes and the decoder reads.

The persist worker skips ``decode_entry`` for ticks and takes the ticks field and the row order
from ``stream.TICKS_FIELD`` / ``stream.TICK_ROW``; these tests hold the encoder and the decoder
to them, and check that a coverage mark and a gap come back as the types they were published as.
"""

from __future__ import annotations

import dataclasses

import orjson

from marketdata.coverage import Coverage
from marketdata.gap import Gap
from marketdata.stream import TICK_ROW, TICKS_FIELD, decode_entry, encode_entry
from marketdata.tick import Tick


def _probe() -> Tick:
    # every field a different value, so a row's order is unambiguous
    return Tick("probe-x", "PROBE-Y", 1_000_000_000_000_001, "1.1", "2.2", "3.3", "4.4", "5.5", 7,
                "sell", "id-8", 1_000_000_000_000_009, "rest", "correct")


def test_tick_row_names_every_tick_field_but_the_entrys_own_once():
    per_tick = [f.name for f in dataclasses.fields(Tick) if f.name not in ("exchange", "symbol")]
    assert sorted(TICK_ROW) == sorted(per_tick) and len(set(TICK_ROW)) == len(TICK_ROW)


def test_encoder_writes_the_exported_layout_and_decoder_reads_it_back():
    t = _probe()
    with_ticks = encode_entry(t.exchange, t.symbol, [t, t])
    without = encode_entry(t.exchange, t.symbol)
    assert set(with_ticks) - set(without) == {TICKS_FIELD}
    row = [getattr(t, f) for f in TICK_ROW]
    assert orjson.loads(with_ticks[TICKS_FIELD]) == [row, row]
    assert decode_entry(with_ticks).ticks == [t, t]
    # str keys, as a client without decode_responses=False would hand them over
    assert decode_entry({k.decode(): v for k, v in with_ticks.items()}).ticks == [t, t]


def test_coverage_and_gaps_come_back_as_published():
    mark = Coverage(1_000, 2_000, "rest")
    gap = Gap("probe-x", "PROBE-Y", "g-1", 10, 20, "5", "9", found_by="id_jump", detected_us=30)
    e = decode_entry(encode_entry("probe-x", "PROBE-Y", coverage=mark, gaps=[gap]))
    assert type(e.coverage) is Coverage and e.coverage == mark
    assert e.gaps == [gap] and e.ticks == []
    # a plain (from, to, source) tuple is the same mark
    assert decode_entry(encode_entry("probe-x", "PROBE-Y", coverage=(1_000, 2_000, "rest"))).coverage == mark
