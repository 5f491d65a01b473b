"""Reconciliation: our bars_1m against the venue's own 1-minute candles (pure library, no Dagster).

For every pair with bars in the range whose venue module publishes candles (``candles_request`` /
``parse_candles``), the candles are fetched from the venue's configured REST endpoint and compared
minute by minute with the *complete* bars (an incomplete minute is the completeness check's
business; counted here as skipped):

* ``trade_count`` where the venue reports one (Binance kline index 8): a lost or duplicated trade
  changes it whatever its size;
* ``volume`` always (a corrected quantity changes it; the only measure where a venue has no count);
* ``high`` / ``low`` when both sides traded (order-independent, unlike open/close, so venues whose
  trade ids do not order same-timestamp trades cannot cause false alarms).

A minute the venue has no candle for counts as zero trades and zero volume (venues omit empty
intervals). A pair whose candles cannot be fetched (venue unreachable, no API keys, an error
answer) is listed with the reason in ``errors`` and is not compared; it does not fail the result,
which fails only on a mismatch (the completeness check owns "is it all there"; this one owns
"does what is there agree with the venue"). Keys come from the environment, as for the
connectors (e.g. APCA_API_KEY_ID / APCA_API_SECRET_KEY; ``marketdata up`` gives Dagster the
simulator's demo keys as it gives them to the connector).

Settings: ``MARKETDATA_RECONCILE_TIMEOUT_S`` (HTTP timeout per request, default 10),
``MARKETDATA_RECONCILE_VOLUME_REL_TOL`` (relative tolerance on volume, default 0 = exact; the
stored quantities are the venue's decimal strings, so exact equality is the right default).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

import httpx

from .. import venues as venue_registry
from ..clock import US_PER_HOUR, US_PER_MINUTE, iso_minute
from .universe import Pair, normalize_pairs, pair_key, pairs_param
from ..settings import env_number
from ..venues.base import Venue

ENV_TIMEOUT_S = "MARKETDATA_RECONCILE_TIMEOUT_S"
ENV_VOLUME_REL_TOL = "MARKETDATA_RECONCILE_VOLUME_REL_TOL"


@dataclass(frozen=True)
class Candle:
    minute_us: int
    volume: Decimal
    trade_count: int | None = None
    high: Decimal | None = None
    low: Decimal | None = None


@dataclass(frozen=True)
class StoredBar:
    minute_us: int
    volume: Decimal
    trade_count: int
    high: Decimal
    low: Decimal
    complete: bool


@dataclass(frozen=True)
class Mismatch:
    exchange: str
    symbol: str
    minute_us: int
    measure: str
    ours: str
    venue: str

    @property
    def minute(self) -> str:
        return iso_minute(self.minute_us)


@dataclass
class PairReconciliation:
    exchange: str
    symbol: str
    measures: list[str] = field(default_factory=list)
    compared: int = 0                    # complete minutes compared
    skipped_incomplete: int = 0          # minutes not compared because our bar is incomplete
    mismatches: list[Mismatch] = field(default_factory=list)
    error: str = ""                      # could not reconcile (fetch failed, no endpoint, ...)
    compared_by_hour: dict[int, int] = field(default_factory=dict)     # hour start µs -> minutes
    skipped_by_hour: dict[int, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return pair_key((self.exchange, self.symbol))

    @property
    def mismatched_minutes(self) -> list[str]:
        return sorted({m.minute for m in self.mismatches})

    @property
    def passed(self) -> bool:
        return not self.error and not self.mismatches


@dataclass
class ReconcileResult:
    start_us: int
    end_us: int
    pairs: list[PairReconciliation]
    unsupported: dict[str, str] = field(default_factory=dict)   # venue -> why it is not reconciled

    @property
    def compared(self) -> int:
        return sum(p.compared for p in self.pairs)

    @property
    def mismatched_minutes(self) -> int:
        return sum(len(p.mismatched_minutes) for p in self.pairs)

    @property
    def errors(self) -> dict[str, str]:
        return {p.key: p.error for p in self.pairs if p.error}

    @property
    def passed(self) -> bool:
        """No compared minute differs from the venue's candle (pairs without candles are listed in
        ``errors``, not failed)."""
        return not any(p.mismatches for p in self.pairs)

    def mismatches_by_pair(self, max_minutes: int = 60) -> dict[str, list[str]]:
        return {p.key: p.mismatched_minutes[:max_minutes] for p in self.pairs if p.mismatches}

    def by_hour(self) -> dict[int, "ReconcileResult"]:
        """The same result split per UTC hour of the range (for per-hour check results)."""
        out: dict[int, ReconcileResult] = {}
        for h in range(self.start_us - self.start_us % US_PER_HOUR, self.end_us, US_PER_HOUR):
            pairs = []
            for p in self.pairs:
                q = PairReconciliation(p.exchange, p.symbol, measures=p.measures, error=p.error,
                                       compared=p.compared_by_hour.get(h, 0),
                                       skipped_incomplete=p.skipped_by_hour.get(h, 0),
                                       mismatches=[m for m in p.mismatches if h <= m.minute_us < h + US_PER_HOUR])
                q.compared_by_hour = {h: q.compared} if q.compared else {}
                q.skipped_by_hour = {h: q.skipped_incomplete} if q.skipped_incomplete else {}
                pairs.append(q)
            out[h] = ReconcileResult(max(h, self.start_us), min(h + US_PER_HOUR, self.end_us), pairs,
                                     dict(self.unsupported))
        return out

    def mismatch_rows(self, max_rows: int = 100) -> list[Mismatch]:
        rows = [m for p in self.pairs for m in p.mismatches]
        rows.sort(key=lambda m: (m.minute_us, m.exchange, m.symbol, m.measure))
        return rows[:max_rows]


# --- stored bars --------------------------------------------------------------------------------

def stored_bars(ch, start_us: int, end_us: int, pairs: Iterable | None = None) -> dict[Pair, dict[int, StoredBar]]:
    """bars_1m FINAL in [start_us, end_us) per pair (all pairs with bars, or only ``pairs``)."""
    plist = normalize_pairs(pairs) if pairs is not None else None
    filt = "AND (exchange, symbol) IN {pairs:Array(Tuple(String, String))}" if plist is not None else ""
    params: dict[str, Any] = {"a": start_us // 1_000_000, "b": end_us // 1_000_000}
    if plist is not None:
        params["pairs"] = pairs_param(plist)
    rows = ch.rows(
        f"""
        SELECT exchange, symbol, toInt64(toUnixTimestamp(minute)), volume, trade_count, high, low, complete
        FROM marketdata.bars_1m FINAL
        WHERE minute >= toDateTime({{a:Int64}}, 'UTC') AND minute < toDateTime({{b:Int64}}, 'UTC') {filt}
        ORDER BY exchange, symbol, minute
        """, parameters=params)
    out: dict[Pair, dict[int, StoredBar]] = {}
    for ex, sym, m, vol, n, hi, lo, complete in rows:
        mu = int(m) * 1_000_000
        out.setdefault((str(ex), str(sym)), {})[mu] = StoredBar(mu, Decimal(vol), int(n), Decimal(hi),
                                                                Decimal(lo), bool(complete))
    return out


# --- venue candles ------------------------------------------------------------------------------

def supports_candles(mod: type[Venue]) -> bool:
    return mod.candles_request is not None


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(str(v))


class CandleFetchError(RuntimeError):
    pass


def fetch_candles(mod: type[Venue], http: httpx.Client, symbol: str, start_us: int, end_us: int, *,
                  attempts: int = 4) -> dict[int, Candle]:
    """The venue's 1-minute candles with open time in [start_us, end_us), paging as needed."""
    venue_symbol = mod.to_venue_symbol(symbol)
    out: dict[int, Candle] = {}
    next_ms = start_us // 1000
    end_ms = end_us // 1000 - 1
    while next_ms <= end_ms:
        req = mod.candles_request(venue_symbol, next_ms, end_ms)
        body = _get(mod, http, req, attempts)
        rows = mod.parse_candles(body)
        if not rows:
            break
        for r in rows:
            mu = int(r["minute_us"])
            if start_us <= mu < end_us:
                tc = r.get("trade_count")
                out[mu] = Candle(mu, Decimal(str(r["volume"])), None if tc is None else int(tc),
                                 _dec(r.get("high")), _dec(r.get("low")))
        last = max(int(r["minute_us"]) for r in rows) // 1000
        if last + 60_000 <= next_ms:        # no progress: the venue ignores startTime
            break
        next_ms = last + 60_000
    return out


def _get(mod: type[Venue], http: httpx.Client, req, attempts: int) -> Any:
    last = ""
    for i in range(attempts):
        try:
            r = http.request(req.method, req.path, params=req.params, json=req.json, headers=req.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise CandleFetchError(f"{req.path}: cannot connect: {type(e).__name__}: {e}") from e
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        else:
            wait = mod.RETRY_AFTER.wait_s(r.status_code, r.headers)
            if wait is not None:
                last = f"HTTP {r.status_code} (rate limited)"
                if wait > 30:
                    break
                time.sleep(wait)
                continue
            if r.status_code < 400:
                return r.json()
            last = f"HTTP {r.status_code}: {r.text[:200]}"
            if r.status_code < 500:
                break
        if i + 1 < attempts:
            time.sleep(min(0.2 * 2 ** i, 2.0))
    raise CandleFetchError(f"{req.path}: {last}")


# --- comparison ---------------------------------------------------------------------------------

def _vol_equal(a: Decimal, b: Decimal, rel_tol: float) -> bool:
    if a == b:
        return True
    if rel_tol <= 0:
        return False
    return abs(a - b) <= Decimal(str(rel_tol)) * max(abs(a), abs(b))


def compare_pair(exchange: str, symbol: str, bars: Mapping[int, StoredBar], candles: Mapping[int, Candle], *,
                 has_trade_count: bool, volume_rel_tol: float = 0.0) -> PairReconciliation:
    """Compare our bars with the venue's candles minute by minute (complete bars only)."""
    res = PairReconciliation(exchange, symbol,
                             measures=(["trade_count"] if has_trade_count else []) + ["volume", "high", "low"])
    for mu in sorted(bars):
        b = bars[mu]
        h = mu - mu % US_PER_HOUR
        if not b.complete:
            res.skipped_incomplete += 1
            res.skipped_by_hour[h] = res.skipped_by_hour.get(h, 0) + 1
            continue
        res.compared += 1
        res.compared_by_hour[h] = res.compared_by_hour.get(h, 0) + 1
        c = candles.get(mu)
        c_count = (c.trade_count if c and c.trade_count is not None else 0)
        c_vol = c.volume if c else Decimal(0)

        def bad(measure: str, ours: Any, theirs: Any) -> None:
            res.mismatches.append(Mismatch(exchange, symbol, mu, measure, _fmt(ours), _fmt(theirs)))
        if has_trade_count and b.trade_count != c_count:
            bad("trade_count", b.trade_count, c_count)
        if not _vol_equal(b.volume, c_vol, volume_rel_tol):
            bad("volume", b.volume, c_vol)
        if c is not None and b.trade_count > 0 and (c.trade_count is None or c.trade_count > 0):
            if c.high is not None and b.high != c.high:
                bad("high", b.high, c.high)
            if c.low is not None and b.low != c.low:
                bad("low", b.low, c.low)
    return res


def _fmt(v: Any) -> str:
    if isinstance(v, Decimal):
        s = format(v.normalize(), "f")
        return s
    return str(v)


def reconcile(ch, start_us: int, end_us: int, venues: Mapping[str, Any], *,
              pairs: Iterable | None = None, timeout_s: float | None = None,
              volume_rel_tol: float | None = None,
              http_factory: Callable[[str, float], httpx.Client] | None = None) -> ReconcileResult:
    """Reconcile bars_1m in [start_us, end_us) with venue candles.

    ``venues``: venue name -> its config (anything with ``rest_url``; a ``marketdata.config``
    ``VenueConfig``). Pairs: those with bars in the range (or ``pairs``), of venues in ``venues``
    whose module publishes candles; others are listed in ``unsupported``. The store session is
    closed before any HTTP request."""
    if start_us % US_PER_MINUTE or end_us % US_PER_MINUTE or end_us <= start_us:
        raise ValueError(f"range [{start_us}, {end_us}) must be non-empty and minute-aligned")
    timeout_s = env_number(os.environ, ENV_TIMEOUT_S, 10.0, minimum=0.1) if timeout_s is None else timeout_s
    if volume_rel_tol is None:
        volume_rel_tol = env_number(os.environ, ENV_VOLUME_REL_TOL, 0.0)
    bars = stored_bars(ch, start_us, end_us, pairs)
    result = ReconcileResult(start_us, end_us, [])
    by_venue: dict[str, list[str]] = {}
    for ex, sym in sorted(bars):
        by_venue.setdefault(ex, []).append(sym)
    factory = http_factory or (lambda base, t: httpx.Client(base_url=base, timeout=t,
                                                            headers={"User-Agent": "marketdata/0.1"}))
    for venue, symbols in sorted(by_venue.items()):
        try:
            mod = venue_registry.get(venue)
        except KeyError:
            result.unsupported[venue] = "no venue module"
            continue
        if not supports_candles(mod):
            result.unsupported[venue] = "the venue module publishes no candles"
            continue
        cfg = venues.get(venue)
        rest_url = getattr(cfg, "rest_url", "") if cfg is not None else ""
        if not rest_url:
            result.unsupported[venue] = "no REST endpoint configured (venue not in the config, or endpoints unresolved)"
            continue
        has_count = mod.CANDLES_HAVE_TRADE_COUNT
        unreachable = ""
        with factory(rest_url, timeout_s) as http:
            for sym in symbols:
                try:
                    if unreachable:
                        raise CandleFetchError(unreachable)
                    candles = fetch_candles(mod, http, sym, start_us, end_us)
                except (CandleFetchError, httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                    if "cannot connect" in str(e):
                        unreachable = str(e)       # do not try every symbol of a venue that is down
                    pr = PairReconciliation(venue, sym, error=f"candles unavailable from {rest_url}: {e}")
                    for b in bars[(venue, sym)].values():
                        if not b.complete:
                            h = b.minute_us - b.minute_us % US_PER_HOUR
                            pr.skipped_incomplete += 1
                            pr.skipped_by_hour[h] = pr.skipped_by_hour.get(h, 0) + 1
                    result.pairs.append(pr)
                    continue
                pair_count = (any(c.trade_count is not None for c in candles.values()) if candles
                              else has_count)
                result.pairs.append(compare_pair(venue, sym, bars[(venue, sym)], candles,
                                                 has_trade_count=pair_count, volume_rel_tol=volume_rel_tol))
    return result
