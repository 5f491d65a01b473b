"""A TLS front for the simulator in tests: clients that insist on `wss://`/`https://` (cryptofeed)
reach the plain-TCP simulator through it. It terminates TLS with a throwaway self-signed
certificate for 127.0.0.1 (made with the `openssl` command) and pipes bytes both ways; the client
trusts the certificate through the standard `SSL_CERT_FILE` / `REQUESTS_CA_BUNDLE` variables."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from pathlib import Path


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsProxy:
    """One TLS listener per upstream port, all on one event loop in a background thread."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tls-proxy", daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []

    def front(self, upstream_port: int) -> int:
        """A TLS port that forwards to 127.0.0.1:`upstream_port`."""
        async def start() -> int:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = await asyncio.start_server(lambda r, w: self._pipe(r, w, upstream_port), sock=sock,
                                                ssl=self.ctx)
            self.servers.append(server)
            return sock.getsockname()[1]
        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    async def _pipe(self, reader, writer, port: int) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def copy(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()
        await asyncio.gather(copy(reader, up_w), copy(up_r, writer))

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
