"""Server-side WebSocket connection with raw frame writing (venue-neutral).

aiohttp performs the handshake and parses what the client sends; everything the simulator sends
is written as raw, unmasked, uncompressed RFC 6455 frames straight to the transport, batched per
generation slice.  Frames are built as latin-1 ``str`` (payloads are ASCII JSON) and encoded once
per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:  # pragma: no cover
    from .venue import Venue

log = logging.getLogger(__name__)

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def _hdr_str(n: int) -> str:
    if n < 126:
        return "\x81" + chr(n)
    if n < 65536:
        return "\x81\x7e" + chr(n >> 8) + chr(n & 0xFF)
    return "\x81\x7f" + "".join(chr(b) for b in n.to_bytes(8, "big"))


#: Text-frame headers (as latin-1 str) for payload lengths below 4096.
HDR: list[str] = [_hdr_str(n) for n in range(4096)]


def text_header(n: int) -> str:
    return HDR[n] if n < 4096 else _hdr_str(n)


def frame_text(payload: str) -> str:
    """One complete text frame (latin-1 str) for an ASCII payload."""
    n = len(payload)
    return (HDR[n] if n < 4096 else _hdr_str(n)) + payload


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    if len(payload) > 125:
        payload = payload[:125]
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return control_frame(OP_CLOSE, body)


class WSConnection:
    """One accepted WebSocket connection and its counters.

    ``state``: ``open`` -> (``silent``) -> ``closed``.  ``venue_state`` holds whatever the venue
    keeps per connection (subscriptions, framing mode...).
    """

    def __init__(self, venue: "Venue", conn_id: int, request: web.Request, ws: web.WebSocketResponse,
                 max_send_buffer: int) -> None:
        self.venue = venue
        self.id = conn_id
        self.request = request
        self.ws = ws
        self.transport: asyncio.Transport | None = request.transport
        self.path = request.path_qs
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.max_send_buffer = max_send_buffer
        self.opened_wall = time.time()
        self.opened_mono = time.monotonic()
        self.state = "open"
        self.silent = False
        self.closed_reason: str | None = None
        self.venue_state: Any = None
        # keepalive
        self.outstanding_pings: dict[bytes, float] = {}
        self.ping_seq = 0
        # counters
        self.frames_sent = 0
        self.bytes_sent = 0
        self.trades_sent = 0
        self.pings_sent = 0
        self.pongs_received = 0
        self.unsolicited_pongs = 0
        self.msgs_received = 0
        self.max_write_buffer = 0
        self.faults: list[str] = []

    # ---------------------------------------------------------------- state
    @property
    def is_open(self) -> bool:
        return self.state == "open" and self.transport is not None and not self.transport.is_closing()

    @property
    def can_send(self) -> bool:
        return self.is_open and not self.silent

    def go_silent(self) -> None:
        self.silent = True

    # ---------------------------------------------------------------- writing
    def write(self, data: bytes, frames: int = 1, trades: int = 0) -> bool:
        """Write pre-framed bytes; drop the client (abort) if its send buffer is over the bound."""
        tr = self.transport
        if tr is None or self.state != "open" or tr.is_closing():
            return False
        buffered = tr.get_write_buffer_size()
        if buffered > self.max_write_buffer:
            self.max_write_buffer = buffered
        if buffered + len(data) > self.max_send_buffer:
            self.abort("slow_consumer")
            return False
        tr.write(data)
        self.frames_sent += frames
        self.bytes_sent += len(data)
        self.trades_sent += trades
        return True

    def send_text(self, payload: str) -> bool:
        """Send one text frame (control replies, notices)."""
        if not self.can_send:
            return False
        try:
            data = frame_text(payload).encode("latin-1")
        except UnicodeEncodeError:
            raw = payload.encode("utf-8")
            data = _hdr_str(len(raw)).encode("latin-1") + raw
        return self.write(data)

    def send_ping(self, payload: bytes) -> bool:
        if not self.can_send:
            return False
        if self.write(control_frame(OP_PING, payload)):
            self.pings_sent += 1
            return True
        return False

    def send_pong(self, payload: bytes) -> bool:
        if not self.can_send:
            return False
        return self.write(control_frame(OP_PONG, payload))

    def on_pong(self, payload: bytes) -> None:
        sent = self.outstanding_pings.get(payload)
        if sent is None:
            self.unsolicited_pongs += 1
            return
        self.pongs_received += 1
        # a pong answers its ping and every older one
        for k in [k for k, t in self.outstanding_pings.items() if t <= sent]:
            del self.outstanding_pings[k]

    # ---------------------------------------------------------------- ending
    def abort(self, reason: str) -> None:
        """TCP reset: no close frame, pending output discarded."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.closed_reason = reason
        tr = self.transport
        if tr is not None and not tr.is_closing():
            sock = tr.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:  # pragma: no cover
                    pass
            tr.abort()

    async def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Close frame, then wait (bounded) for the client's close and close TCP."""
        if self.state == "closed":
            return
        self.closed_reason = self.closed_reason or f"closed:{code}"
        tr = self.transport
        if tr is None or tr.is_closing():
            self.state = "closed"
            return
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            self.state = "closed"
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    def stats(self) -> dict[str, Any]:
        tr = self.transport
        return {
            "conn": self.id,
            "path": self.path,
            "peer": self.peer,
            "state": "silent" if (self.silent and self.state == "open") else self.state,
            "closed_reason": self.closed_reason,
            "opened_at": self.opened_wall,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "trades_sent": self.trades_sent,
            "pings_sent": self.pings_sent,
            "pongs_received": self.pongs_received,
            "unsolicited_pongs": self.unsolicited_pongs,
            "msgs_received": self.msgs_received,
            "write_buffer": tr.get_write_buffer_size() if (tr is not None and not tr.is_closing()) else 0,
            "max_write_buffer": self.max_write_buffer,
            "faults": list(self.faults),
        }
