"""The one REST client every part of the platform calls a venue with: the live connector and the
book feed (``AsyncVenueRest``), history loads and gap repairs outside an event loop
(``VenueRest``: a Dagster op, the CLI). Both run the same attempt loop (``_Attempts``):

* 429/418 (whatever the venue's ``RETRY_AFTER`` rule names): wait as long as the venue says, then
  retry;
* 5xx and network errors: capped, jittered backoff, ``attempts`` times, then
  ``RestError(unreachable=True)``;
* 4xx otherwise: ``RestError`` at once (a wrong symbol does not get better by retrying);
* weight: every request declares its weight (``HttpRequest.weight``); the client spends at most
  ``weight_fraction`` of the venue's per-minute budget (read from the venue's instruments answer
  where the venue can, ``rest_weight_limit``; else ``default_weight_limit``; no pacing until a
  budget is known), taking the venue's own count of used weight (``used_weight`` of the response
  headers) when it reports one, so the live connectors sharing the IP keep their headroom.

The loop is written once as a generator of steps (sleep this long / send this request); each
client only carries the steps out, with its own sleep and I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import httpx
import orjson

from .. import venues as venue_registry
from ..backoff import Backoff
from ..venues.base import BookVenue, HttpRequest, Venue
from ..venues.retry_after import RetryAfter

log = logging.getLogger("marketdata.rest")

WINDOW_S = 60.0              # venues count weight per minute
USER_AGENT = {"User-Agent": "marketdata/0.1"}


class RestError(RuntimeError):
    """A REST call that failed. `unreachable`: the venue never answered usefully (network errors
    or 5xx on every attempt), as opposed to refusing the request (4xx)."""

    def __init__(self, msg: str, *, unreachable: bool = False) -> None:
        super().__init__(msg)
        self.unreachable = unreachable


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


def retry_rule(venue: type[Venue] | type[BookVenue]) -> RetryAfter:
    """The venue's "wait" rule: its contract's ``RETRY_AFTER`` (the common one unless it differs)."""
    return venue.RETRY_AFTER


_SLEEP, _SEND, _DONE = "sleep", "send", "done"
Step = Generator[tuple[str, Any], Any, Any]


def _next(steps: Step, reply: Any) -> tuple[str, Any]:
    """The call's next step, given the answer to the last one; (_DONE, body) at its end."""
    try:
        return steps.send(reply)
    except StopIteration as done:
        return _DONE, done.value


class _Attempts:
    """What both clients share: the venue, its wait rule, the weight budget, the statistics, and
    the attempt loop of one call as steps (see the module doc)."""

    def __init__(self, venue: str | type[Venue] | type[BookVenue], base_url: str, *, weight_fraction: float = 0.5,
                 default_weight_limit: int | None = None, attempts: int = 6,
                 backoff: tuple[float, float] = (0.2, 10.0), label: str = "REST"):
        self.mod = venue_registry.get(venue) if isinstance(venue, str) else venue
        self.venue = self.name = self.mod.NAME
        self.base_url = base_url
        self.retry = retry_rule(self.mod)
        self.weight_fraction = min(1.0, max(0.01, weight_fraction))
        self.attempts = attempts
        self.backoff = backoff
        self.label = label
        self.stats = RestStats()
        self.budget = WeightBudget(None if default_weight_limit is None
                                   else int(default_weight_limit * self.weight_fraction))

    def set_weight_limit(self, per_minute: int) -> None:
        self.budget.budget = max(1, int(per_minute * self.weight_fraction))

    def _steps(self, req: HttpRequest) -> Step:
        """One call: yields (_SLEEP, seconds) and (_SEND, request) and is sent the response, or the
        httpx.HTTPError the request raised; returns the decoded JSON body or raises RestError."""
        backoff = Backoff(*self.backoff)
        last = ""
        for _ in range(self.attempts):
            wait = self.budget.reserve(req.weight)
            while wait > 0:
                log.info("%s %s: weight budget %d/min spent; pacing %.1fs", self.venue, self.label,
                         self.budget.budget, wait)
                self.stats.throttled_s += wait
                yield _SLEEP, wait
                wait = self.budget.reserve(req.weight)
            self.stats.requests += 1
            self.stats.weight += req.weight
            r = yield _SEND, req
            if isinstance(r, httpx.HTTPError):
                last = f"{type(r).__name__}: {r}"
            else:
                self.budget.observe(self.mod.used_weight(r.headers))
                retry = self.retry.wait_s(r.status_code, r.headers)
                if retry is not None:
                    self.stats.rate_limited += 1
                    self.stats.retry_wait_s += retry
                    last = f"HTTP {r.status_code} (rate limited)"
                    log.warning("%s %s %s: %s; waiting %.1fs as the venue asks", self.venue, self.label,
                                req.path, last, retry)
                    yield _SLEEP, retry
                    continue
                if r.status_code < 400:
                    return orjson.loads(r.content)
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code < 500:
                    raise RestError(f"{self.venue} {self.label} {req.path} {req.params}: {last}")
            delay = backoff.next_delay()
            self.stats.retry_wait_s += delay
            log.warning("%s %s %s failed (%s); retrying in %.1fs", self.venue, self.label, req.path, last, delay)
            yield _SLEEP, delay
        self.stats.errors.append(last)
        raise RestError(f"{self.venue} {self.label} {req.path} failed {self.attempts} times: {last}",
                        unreachable=True)


class AsyncVenueRest(_Attempts):
    """A venue's REST inside an event loop (connector, book feed); a stop cancels the call."""

    def __init__(self, venue: str | type[Venue] | type[BookVenue], base_url: str, *, timeout: float = 10.0, **kw):
        super().__init__(venue, base_url, **kw)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, headers=USER_AGENT)

    async def call(self, req: HttpRequest) -> Any:
        """One REST call; the decoded JSON body."""
        steps = self._steps(req)
        op, arg = next(steps)
        while op != _DONE:
            op, arg = _next(steps, await (asyncio.sleep(arg) if op == _SLEEP else self._send(arg)))
        return arg

    async def _send(self, req: HttpRequest) -> httpx.Response | httpx.HTTPError:
        try:
            return await self.http.request(req.method, req.path, params=req.params, json=req.json,
                                           headers=req.headers)
        except httpx.HTTPError as e:
            return e

    async def drain(self, pager) -> Any:
        """Every page of ``pager`` (``marketdata.rest.pager``); the pager, finished."""
        while (req := pager.next_request()) is not None:
            pager.take(await self.call(req))
        return pager

    async def aclose(self) -> None:
        await self.http.aclose()


class VenueRest(_Attempts):
    """A venue's REST without an event loop (history loads, gap repair): waits in slices of at
    most a second so that ``stop()`` ends a long wait."""

    def __init__(self, venue: str | type[Venue], base_url: str, *, timeout: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] | None = None, **kw):
        super().__init__(venue, base_url, **kw)
        if not base_url:
            raise ValueError(f"{self.venue}: no REST URL (set venues.{self.venue}.rest_url or endpoints in the config)")
        self.sleep = sleep
        self.stop = stop or (lambda: False)
        self.http = httpx.Client(base_url=base_url, timeout=timeout, headers=USER_AGENT)

    def __enter__(self) -> "VenueRest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

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
        steps = self._steps(req)
        op, arg = next(steps)
        while op != _DONE:
            op, arg = _next(steps, self._wait(arg) if op == _SLEEP else self._send(arg))
        return arg

    def _send(self, req: HttpRequest) -> httpx.Response | httpx.HTTPError:
        try:
            return self.http.request(req.method, req.path, params=req.params, json=req.json, headers=req.headers)
        except httpx.HTTPError as e:
            return e

    def drain(self, pager) -> Any:
        """Every page of ``pager`` (``marketdata.rest.pager``); the pager, finished."""
        while (req := pager.next_request()) is not None:
            pager.take(self.call(req))
        return pager

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
        """The venue clock, where the venue says how to ask for it (``server_time_request``)."""
        if self.mod.server_time_request is None:
            return None
        return self.mod.parse_server_time(self.call(self.mod.server_time_request()))
