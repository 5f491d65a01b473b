"""The read side: bars and ticks for backtests as polars DataFrames, each carrying its completeness.

    from marketdata.read import bars, ticks, completeness
    df = bars(["binance"], ["BTC-USDT"], "2026-01-01", "2026-02-01", interval="1h", complete_only=True)

    request.py         validation of venues, symbols, range and interval (ReadError)
    bars.py            bars(): bars_1m FINAL via Arrow; coarser intervals derived on read
    resample.py        1m -> 5m / 15m / 1h / 1d, complete only if every expected minute is
    calendar_frames.py the market calendar (bars.calendar) as polars frames
    ticks.py           ticks(): ticks FINAL via Arrow, with their minute's completeness
    completeness.py    completeness(): the audit the Dagster check runs, as a frame
    bench.py           `marketdata bench --read`: a year of bars into polars and Parquet, vs pandas
"""

from .bars import bars
from .completeness import completeness
from .request import INTERVALS, ReadError
from .ticks import ticks

__all__ = ["INTERVALS", "ReadError", "bars", "completeness", "ticks"]
