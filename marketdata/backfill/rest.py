"""A venue's REST API for history loads and repairs, synchronously (no event loop in a Dagster op
or a CLI), with the same manners as the live connector (``VenueConnector.rest``):

* 429/418: wait as long as the venue says (the venue module's ``retry_after``), then retry;
* 5xx and network errors: capped, jittered backoff, ``attempts`` times, then ``RestError``;
* 4xx otherwise: ``RestError`` at once (a wrong symbol does not get better by retrying);
* weight: every request declares its weight (``HttpRequest.weight``); the client spends at most
  ``weight_fraction`` of the venue's per-minute budget (read from the venue's instruments answer
  where the module can, ``rest_weight_limit``; else ``default_weight_limit``; no pacing until a
  budget is known), taking the venue's own count of used weight (``used_weight`` of the response
  headers) when it reports one, so the live connectors sharing the IP keep their headroom for
  repairs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import orjson

from .. import venues as venue_registry
from ..ingest.backoff import Backoff
from ..venues.base import HttpRequest, Venue

log = logging.getLogger("marketdata.backfill")

WINDOW_S = 60.0              # venues count weight per minute


class RestError(RuntimeError):
    pass


class WeightBudget:
    """Client-side pacing: at most ``budget`` weight per wall-clock minute window.

    ``reserve(w)`` returns how long to wait before a request of weight ``w`` may go; the caller
    sleeps that long and calls again. The venue's own count (``observe``) wins when it is higher
    (other clients on the same IP spend from the same budget)."""

    def __init__(self, budget: int | None, clock: Callable[[], float] = time.time):
        self.budget = None if budget is None else max(1, int(budget))   # None: not known, no pacing
        self.clock = clock
        self.window = -1
        self.used = 0

    def _roll(self, now: float) -> None:
        w = int(now // WINDOW_S)
        if w != self.window:
            self.window, self.used = w, 0

    def reserve(self, weight: int) -> float:
        now = self.clock()
        self._roll(now)
        if self.budget is not None and self.used > 0 and self.used + weight > self.budget:
            return (self.window + 1) * WINDOW_S - now + 0.05
        self.used += weight
        return 0.0

    def observe(self, venue_used: int | None) -> None:
        if venue_used is not None:
            self._roll(self.clock())
            self.used = max(self.used, venue_used)


@dataclass
class RestStats:
    requests: int = 0
    weight: int = 0
    rate_limited: int = 0            # 429/418 answers waited out
    throttled_s: float = 0.0         # time spent pacing below the weight budget
    retry_wait_s: float = 0.0        # time spent waiting on Retry-After and backoff
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "weight": self.weight, "rate_limited": self.rate_limited,
                "throttled_s": round(self.throttled_s, 3), "retry_wait_s": round(self.retry_wait_s, 3)}


class VenueRest:
    """REST of one venue at ``base_url``."""

    def __init__(self, venue: str, base_url: str, *, weight_fraction: float = 0.5,
                 default_weight_limit: int | None = None, attempts: int = 6, timeout: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] | None = None):
        if not base_url:
            raise ValueError(f"{venue}: no REST URL (set venues.{venue}.rest_url or endpoints in the config)")
        self.venue = venue
        self.mod: type[Venue] = venue_registry.get(venue)
        self.base_url = base_url
        self.weight_fraction = min(1.0, max(0.01, weight_fraction))
        self.attempts = attempts
        self.sleep = sleep
        self.stop = stop or (lambda: False)
        self.stats = RestStats()
        self.budget = WeightBudget(None if default_weight_limit is None
                                   else int(default_weight_limit * self.weight_fraction))
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers={"User-Agent": "marketdata/0.1"})

    def __enter__(self) -> "VenueRest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def set_weight_limit(self, per_minute: int) -> None:
        self.budget.budget = max(1, int(per_minute * self.weight_fraction))

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop():
            left = end - time.monotonic()
            if left <= 0:
                return
            self.sleep(min(left, 1.0))
        raise RestError(f"{self.venue}: stopped while waiting")

    def call(self, req: HttpRequest) -> Any:
        """One REST call; the decoded JSON body."""
        backoff = Backoff(base=0.2, cap=10.0)
        last = ""
        for _ in range(self.attempts):
            wait = self.budget.reserve(req.weight)
            while wait > 0:
                log.info("%s REST: weight budget %d/min spent; pacing %.1fs", self.venue, self.budget.budget, wait)
                self.stats.throttled_s += wait
                self._wait(wait)
                wait = self.budget.reserve(req.weight)
            self.stats.requests += 1
            self.stats.weight += req.weight
            try:
                r = self.http.request(req.method, req.path, params=req.params, json=req.json, headers=req.headers)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                self.budget.observe(self.mod.used_weight(r.headers))
                retry = self.mod.retry_after(r.status_code, r.headers)
                if retry is not None:
                    self.stats.rate_limited += 1
                    self.stats.retry_wait_s += retry
                    last = f"HTTP {r.status_code} (rate limited)"
                    log.warning("%s REST %s: %s; waiting %.1fs as the venue asks", self.venue, req.path, last, retry)
                    self._wait(retry)
                    continue
                if r.status_code < 400:
                    return orjson.loads(r.content)
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code < 500:
                    raise RestError(f"{self.venue} REST {req.path} {req.params}: {last}")
            delay = backoff.next_delay()
            self.stats.retry_wait_s += delay
            log.warning("%s REST %s failed (%s); retrying in %.1fs", self.venue, req.path, last, delay)
            self._wait(delay)
        self.stats.errors.append(last)
        raise RestError(f"{self.venue} REST {req.path} failed {self.attempts} times: {last}")

    def instruments(self) -> dict[str, str]:
        """Canonical symbol -> venue symbol for the instruments listed as trading; also adopts
        the venue's weight budget when it publishes one."""
        body = self.call(self.mod.instruments_request())
        limit = self.mod.rest_weight_limit(body)
        if limit:
            self.set_weight_limit(limit)
        return {i.symbol: i.venue_symbol for i in self.mod.parse_instruments(body)}

    def venue_symbols(self, symbols: list[str]) -> dict[str, str]:
        listed = self.instruments()
        missing = [s for s in symbols if s not in listed]
        if missing:
            raise RestError(f"{self.venue}: symbol(s) {', '.join(missing)} not listed as trading by the venue "
                            f"({self.base_url}); {len(listed)} are, e.g. {', '.join(sorted(listed)[:8])}")
        return {s: listed[s] for s in symbols}

    def server_time_us(self) -> int | None:
        """The venue clock, where the module knows how to ask for it."""
        if self.mod.server_time_request is None:
            return None
        return self.mod.parse_server_time(self.call(self.mod.server_time_request()))
