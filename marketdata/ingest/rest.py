"""REST calls to a venue, the way every part of the platform makes them: wait as the venue asks
on 429/418 (its module reads Retry-After), back off on 5xx and network errors, fail fast on other
4xx with the venue's own message."""

from __future__ import annotations

import asyncio
import logging
from types import ModuleType

import httpx
import orjson

from ..venues.base import HttpRequest
from .backoff import Backoff

log = logging.getLogger("marketdata.rest")


class RestError(RuntimeError):
    """A REST call that failed. `unreachable`: the venue never answered usefully (network errors
    or 5xx on every attempt), as opposed to refusing the request (4xx)."""

    def __init__(self, msg: str, *, unreachable: bool = False) -> None:
        super().__init__(msg)
        self.unreachable = unreachable


class VenueRest:
    def __init__(self, mod: ModuleType, base_url: str, *, timeout: float = 10.0, attempts: int = 6):
        self.mod = mod
        self.name = mod.NAME
        self.attempts = attempts
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                      headers={"User-Agent": "marketdata/0.1"})
        self.calls = 0
        self.rate_limited = 0

    async def call(self, req: HttpRequest) -> object:
        backoff = Backoff(base=0.2, cap=10.0)
        last = ""
        for _ in range(self.attempts):
            self.calls += 1
            try:
                r = await self.http.request(req.method, req.path, params=req.params, json=req.json,
                                             headers=req.headers)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}"
            else:
                wait = self.mod.retry_after(r.status_code, r.headers)
                if wait is not None:
                    self.rate_limited += 1
                    last = f"HTTP {r.status_code} (rate limited)"
                    log.warning("%s REST %s: %s; waiting %.1fs as the venue asks", self.name, req.path, last, wait)
                    await asyncio.sleep(wait)
                    continue
                if r.status_code < 400:
                    return orjson.loads(r.content)
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code < 500:
                    raise RestError(f"{self.name} REST {req.path}: {last}")
            await asyncio.sleep(backoff.next_delay())
        raise RestError(f"{self.name} REST {req.path} failed {self.attempts} times: {last}", unreachable=True)

    async def aclose(self) -> None:
        await self.http.aclose()
