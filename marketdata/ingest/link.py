"""One WebSocket link, whichever transport carries it: the interface the trade connector and the
book feed read and write, so a transport (or its quirk) is handled once, here.

``open_link(url, transport=...)`` is an async context manager giving a link with
``recv()`` and ``async for`` (text frames as ``str``, binary as ``bytes``, fragmented messages
reassembled), ``recv_batch()`` (every frame already received, at least one; ``[]`` once the link
closed with a handshake), ``send(str | bytes)``, ``close()``, ``abort()`` (drop the TCP connection: a
silent drop was detected) and ``last_rx`` (monotonic time bytes last arrived, pings included).
A link that ends abnormally raises ``LinkClosed`` (a ``ConnectionError``); after a close
handshake ``async for`` simply ends.

Transports:

- ``picows`` (the default): a Cython frame parser with a listener callback per frame and no
  Future per message; frames queue in a deque that the reader drains, and past ``max_queue``
  frames the socket stops being read (TCP pushes back on the venue, nothing is dropped). Pings
  when the link has been idle 20 s; no pong within 20 s ends the link.
- ``websockets``: the websockets library's asyncio client, permessage-deflate off, client pings
  every 20 s.

Choose per venue with ``transport:`` in the config, or for every venue with
``MARKETDATA_WS_TRANSPORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from typing import AsyncIterator

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedOK

from ..clock import now_us
from ..config import WS_TRANSPORTS
from ..errors import ConfigError
from ..venues.base import MalformedFrame, Reconnect, VenueError

# picows measured better: `marketdata bench` over all ten venues at 100k/s asked, ingest CPU per
# tick 19.5 / 21.8 µs on picows against 32.3 / 28.2 µs on websockets in two pairs of runs.
DEFAULT_TRANSPORT = "picows"
log = logging.getLogger("marketdata.ingest")


class LinkClosed(ConnectionError):
    """The link ended without a close handshake (reset, protocol error, ping timeout)."""


def transport_for(configured: str | None) -> str:
    """The venue's `transport:`, else MARKETDATA_WS_TRANSPORT, else picows; an unknown name or a
    transport that is not installed fails the start with what to do."""
    name = configured or os.environ.get("MARKETDATA_WS_TRANSPORT") or DEFAULT_TRANSPORT
    if name not in WS_TRANSPORTS:
        raise ConfigError(f"MARKETDATA_WS_TRANSPORT: unknown WebSocket transport {name!r}; "
                          f"use one of {', '.join(WS_TRANSPORTS)}")
    if name == "picows" and ws_connect is None:
        raise ConfigError("WebSocket transport picows is not installed: pip install picows")
    return name


@contextlib.asynccontextmanager
async def open_link(url: str, transport: str | None = None, *, max_queue: int = 256,
                    max_size: int = 2 ** 23, open_timeout: float = 10.0) -> AsyncIterator:
    if (transport or transport_for(None)) == "picows":
        link = await _PicowsLink.open(url, max_queue=max_queue, max_size=max_size, open_timeout=open_timeout)
        try:
            yield link
        finally:
            await link.close()
        return
    async with connect(url, ping_interval=20, ping_timeout=20, open_timeout=open_timeout, close_timeout=1,
                       max_queue=max_queue, max_size=max_size, compression=None, proxy=None,
                       create_connection=_TrackedConnection) as ws:
        ws.last_rx = time.monotonic()
        yield ws


async def await_greeting(ws, parser, counters, who: str) -> None:
    """A venue that greets a new link (KuCoin `welcome`) may ignore a subscribe sent before the
    greeting; its parser's `ready` turns True on it. A refusal (stale token) ends the link.
    `counters` (a connector or a book feed) counts malformed frames and venue errors."""
    async with asyncio.timeout(10):
        while not parser.ready:
            try:
                events = parser.parse(await ws.recv(), now_us())
            except MalformedFrame as e:
                counters.malformed += 1
                log.warning("%s: malformed frame skipped (%s)", who, e)
                continue
            for ev in events:
                if type(ev) is Reconnect:
                    raise ConnectionError(f"{who}: the venue refused the link: {ev.reason}")
                if type(ev) is VenueError:
                    counters.venue_errors += 1
                    log.error("%s: venue error %s: %s", who, ev.code, ev.message)


# --- websockets ------------------------------------------------------------------------------

class _TrackedConnection(ClientConnection):
    """Remembers when bytes last arrived (data, pings, anything): a link with no bytes for the
    venue's idle timeout is dead even if the OS never reports it (a silent drop)."""

    last_rx = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        super().data_received(data)

    def abort(self) -> None:
        self.transport.abort()

    async def recv_batch(self) -> list:
        try:
            return [await self.recv()]
        except ConnectionClosedOK:
            return []


# --- picows ----------------------------------------------------------------------------------

try:
    from picows import WSCloseCode, WSListener, WSMsgType, ws_connect
except ImportError:          # the transport is optional; asking for it without it fails at open
    WSListener = object
    ws_connect = None


class _Listener(WSListener):
    """Frames from picows' callback into a deque; the reader waits on one Future only when the
    deque is empty, so a burst of frames costs no Future each."""

    def __init__(self, max_queue: int) -> None:
        super().__init__()
        self.frames: deque = deque()
        self.waiter: asyncio.Future | None = None
        self.max_queue = max_queue
        self.transport = None
        self.paused = False
        self.closed = False
        self.close_code = None          # from the venue's close frame, if one came
        self.last_rx = time.monotonic()
        self._parts: list[bytes] | None = None
        self._text = False

    def on_ws_connected(self, transport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport, frame) -> None:
        self.last_rx = time.monotonic()
        mt = frame.msg_type
        if mt == WSMsgType.TEXT:
            if frame.fin:
                self._push(frame.get_payload_as_utf8_text())
            else:
                self._text, self._parts = True, [frame.get_payload_as_bytes()]
        elif mt == WSMsgType.BINARY:
            if frame.fin:
                self._push(frame.get_payload_as_bytes())
            else:
                self._text, self._parts = False, [frame.get_payload_as_bytes()]
        elif mt == WSMsgType.CONTINUATION:
            if self._parts is None:
                transport.send_close(WSCloseCode.PROTOCOL_ERROR)
                transport.disconnect()
                return
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                data = b"".join(self._parts)
                self._parts = None
                self._push(data.decode() if self._text else data)
        elif mt == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            transport.send_close(self.close_code)
            transport.disconnect()
        # PING is answered by picows (auto pong); PONG ends its auto-ping wait

    def _push(self, item) -> None:
        self.frames.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        if not self.paused and len(self.frames) >= self.max_queue:
            self.paused = True
            self.transport.underlying_transport.pause_reading()

    def on_ws_disconnected(self, transport) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _PicowsLink:
    def __init__(self, transport, listener: _Listener) -> None:
        self._t = transport
        self._l = listener
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, url: str, *, max_queue: int, max_size: int, open_timeout: float) -> "_PicowsLink":
        try:
            async with asyncio.timeout(open_timeout):
                transport, listener = await ws_connect(
                    lambda: _Listener(max_queue), url, websocket_handshake_timeout=open_timeout,
                    enable_auto_ping=True, auto_ping_idle_timeout=20, auto_ping_reply_timeout=20,
                    max_frame_size=max_size)
        except Exception as e:          # picows' handshake errors (WSError): the link failed to open
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise                    # already what the reconnect loop handles
            raise LinkClosed(f"WebSocket handshake failed: {type(e).__name__}: {e}") from e
        return cls(transport, listener)

    @property
    def last_rx(self) -> float:
        return self._l.last_rx

    @last_rx.setter
    def last_rx(self, value: float) -> None:
        self._l.last_rx = value

    async def recv(self):
        lst = self._l
        frames = lst.frames
        while not frames:
            if lst.closed:
                raise LinkClosed(f"link closed (close code {lst.close_code})" if lst.close_code is not None
                                 else "link lost: no close frame received")
            lst.waiter = self._loop.create_future()
            try:
                await lst.waiter
            finally:
                lst.waiter = None
        item = frames.popleft()
        if lst.paused and len(frames) <= lst.max_queue // 2:
            lst.paused = False
            self._t.underlying_transport.resume_reading()
        return item

    async def recv_batch(self) -> list:
        """Every frame received so far, at least one (the trade reader's loop): one await per
        wake-up of the loop rather than two coroutines per frame (measured 0.5 µs a frame)."""
        lst = self._l
        frames = lst.frames
        if not frames:
            try:
                first = await self.recv()
            except LinkClosed:
                if lst.close_code is not None and not frames:
                    return []                      # a close handshake ends the link
                raise
            if not frames:
                return [first]
            batch = [first, *frames]
        else:
            batch = list(frames)
        frames.clear()
        if lst.paused:
            lst.paused = False
            self._t.underlying_transport.resume_reading()
        return batch

    def __aiter__(self) -> "_PicowsLink":
        return self

    async def __anext__(self):
        try:
            return await self.recv()
        except LinkClosed:
            if self._l.close_code is not None and not self._l.frames:
                raise StopAsyncIteration from None      # a close handshake ends the iteration
            raise

    async def send(self, message) -> None:
        if self._l.closed:
            raise LinkClosed("link closed")
        if isinstance(message, str):
            self._t.send(WSMsgType.TEXT, message.encode())
        else:
            self._t.send(WSMsgType.BINARY, message)

    async def close(self) -> None:
        if self._l.closed:
            return
        self._t.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(1.0):
                await self._t.wait_disconnected()
        except Exception:               # a timeout, or the error that ended the link: it is closing anyway
            pass
        finally:
            self._t.disconnect(graceful=False)

    def abort(self) -> None:
        self._t.disconnect(graceful=False)
